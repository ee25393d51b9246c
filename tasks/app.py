"""The Celery application, configured from the settings the entry point hands in (resources
such as the database come from bootstrap.py, one runtime per process).

Each setting below is chosen for this workload (money moves on these messages):
"""

from __future__ import annotations

from celery import Celery

from core.settings import Settings, get_settings, retry_backoff_max_s
from strategy_client.broker import broker_config, broker_url
from strategy_client.routing import SIGNALS_QUEUE, TASK_ROUTES


def celery_config(settings: Settings) -> dict[str, object]:
    return {
        # Redis, or RabbitMQ for an amqp:// ARBITER_BROKER_URL: see strategy_client/broker.py.
        **broker_config(broker_url(settings), settings.visibility_timeout_s),
        # No result backend: tasks hand the order id down the chain; state lives in Postgres.
        "task_ignore_result": True,
        "result_backend": None,
        # Ack after the task ran, and give a task back to the queue if its worker process
        # died: without reject_on_worker_lost a SIGKILLed child's message is acked and lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message at a time per process: a crash loses no prefetched work to a timeout,
        # and a slow brokerage call does not hold signals hostage.
        "worker_prefetch_multiplier": 1,
        # When the broker goes away, long-running tasks are cancelled and redelivered rather
        # than left half-acked.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": max(settings.task_time_limit_s - 10, 1),
        # JSON only: a pickle message is refused, never executed.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Task events cost each task a few messages; off unless ARBITER_TASK_EVENTS is set.
        # Flower turns them on in the running workers when it starts (enable_events).
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_track_started": True,
        "task_routes": TASK_ROUTES,
        "task_default_queue": SIGNALS_QUEUE,
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
        # Read by tasks.pipeline.PipelineTask: transient errors are retried this often, the
        # backoff capped far below the visibility timeout so a retry is never also redelivered.
        "arbiter_max_retries": settings.submit_max_retries,
        "arbiter_retry_backoff_max": retry_backoff_max_s(settings.visibility_timeout_s),
    }


TASK_MODULES = ["tasks.pipeline", "tasks.maintenance", "tasks.notifications", "tasks.order_control"]


def create_app(settings: Settings | None = None) -> Celery:
    import tasks.logs  # noqa: F401  (hooks Celery's logging setup: order context on every line)

    settings = settings or get_settings()
    app = Celery("arbiter", include=TASK_MODULES)
    app.config_from_object(celery_config(settings))
    from beat_schedule import beat_schedule

    app.conf.beat_schedule = beat_schedule(settings)
    return app


_app: Celery | None = None


def get_app() -> Celery:
    global _app
    if _app is None:
        _app = create_app()
    return _app
