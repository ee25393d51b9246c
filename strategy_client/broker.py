"""Celery's broker, as workers, beat and the signal client all see it: Redis (the default) or
RabbitMQ when ARBITER_BROKER_URL is an `amqp://` URL. A publisher declares the queues it sends
to, so both sides must declare them alike: this module is that one definition."""

from __future__ import annotations

from urllib.parse import urlsplit

from kombu.entity import Exchange, Queue

from core.settings import DEFAULT_REDIS_URL, Settings
from strategy_client.routing import (
    MAINTENANCE_QUEUE,
    NOTIFICATIONS_QUEUE,
    ORDERS_QUEUE,
    SIGNALS_QUEUE,
)

QUEUE_NAMES = (SIGNALS_QUEUE, ORDERS_QUEUE, MAINTENANCE_QUEUE, NOTIFICATIONS_QUEUE)
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def broker_url(settings: Settings) -> str:
    """ARBITER_BROKER_URL, else the Redis URL (the default broker)."""
    return settings.broker_url or settings.redis_url or DEFAULT_REDIS_URL


def is_amqp(url: str) -> bool:
    return urlsplit(url).scheme in AMQP_SCHEMES


def broker_config(url: str, visibility_timeout_s: int) -> dict[str, object]:
    """The broker half of the Celery configuration for `url`."""
    if is_amqp(url):
        # RabbitMQ: durable quorum queues (replicated, and a message lives until it is acked
        # on the channel it was delivered on: no visibility timeout, a dead consumer's
        # messages return at once), publisher confirms (a publish returns once the broker
        # has the message). Topic exchanges let retry countdowns use Celery's native delayed
        # delivery; quorum queues have no priorities and no global QoS (Celery detects them).
        queues = [Queue(name, Exchange(name, type="topic"), routing_key=name, durable=True,
                        queue_arguments={"x-queue-type": "quorum"}) for name in QUEUE_NAMES]
        return {
            "broker_url": url,
            "broker_transport_options": {"confirm_publish": True},
            "task_queues": queues,
            "task_default_queue_type": "quorum",
            "task_create_missing_queue_type": "quorum",
            "worker_detect_quorum_queues": True,
        }
    transport = {
        # A task unacked for this long is redelivered to another worker. It must exceed the
        # longest task and any retry countdown, or a slow task would run twice.
        "visibility_timeout": visibility_timeout_s,
        # Who redelivers it: each worker scans the unacked set every interval x throttle
        # seconds (kombu's defaults, 10 x 10, leave a killed worker's message stranded for up
        # to 100 s past the timeout). Every interval, and well inside a short timeout.
        "unacked_restore_interval": restore_interval_s(visibility_timeout_s),
        "unacked_restore_throttle": 1,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "health_check_interval": 25,
    }
    return {
        "broker_url": url,
        "broker_transport_options": transport,
        "task_queues": [Queue(name) for name in QUEUE_NAMES],
    }


def restore_interval_s(visibility_timeout_s: int) -> int:
    """Seconds between a Redis worker's scans for deliveries past the visibility timeout."""
    return max(1, min(10, visibility_timeout_s // 4))
