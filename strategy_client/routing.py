"""Task names and queues, shared by the worker and by the light client (no task code here).

Queues keep the hot path apart from maintenance: `signals` carries intake, validation and the
conflict check (Postgres only); `orders` carries brokerage submission (network-bound, retried);
`maintenance` carries the beat schedule's work, so a slow reconciliation never delays a signal;
`notifications` carries alerts to outside targets, served by a worker of its own.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chain

SIGNALS_QUEUE = "signals"
ORDERS_QUEUE = "orders"
MAINTENANCE_QUEUE = "maintenance"
NOTIFICATIONS_QUEUE = "notifications"

INTAKE = "arbiter.intake"
VALIDATE = "arbiter.validate"
CHECK_CONFLICT = "arbiter.check_conflict"
SUBMIT = "arbiter.submit"
CANCEL = "arbiter.cancel_order"
REPLACE = "arbiter.replace_order"

RECONCILE_ORDERS = "arbiter.reconcile_orders"
RECOVER_STALLED = "arbiter.recover_stalled"
RECONCILE_POSITIONS = "arbiter.reconcile_positions"
RELAY_EVENTS = "arbiter.relay_events"
EXPIRE_OWNERSHIP = "arbiter.expire_ownership"
PURGE_EVENTS = "arbiter.purge_events"
STARTUP_RECOVERY = "arbiter.startup_recovery"

NOTIFY_DISPATCH = "arbiter.notify_dispatch"
NOTIFY_DELIVER = "arbiter.notify_deliver"
NOTIFY_DIGEST = "arbiter.notify_digest"
DAILY_REPORT = "arbiter.daily_report"

TASK_ROUTES = {
    INTAKE: {"queue": SIGNALS_QUEUE},
    VALIDATE: {"queue": SIGNALS_QUEUE},
    CHECK_CONFLICT: {"queue": SIGNALS_QUEUE},
    SUBMIT: {"queue": ORDERS_QUEUE},
    CANCEL: {"queue": ORDERS_QUEUE},
    REPLACE: {"queue": ORDERS_QUEUE},
    RECONCILE_ORDERS: {"queue": MAINTENANCE_QUEUE},
    RECOVER_STALLED: {"queue": MAINTENANCE_QUEUE},
    RECONCILE_POSITIONS: {"queue": MAINTENANCE_QUEUE},
    RELAY_EVENTS: {"queue": MAINTENANCE_QUEUE},
    EXPIRE_OWNERSHIP: {"queue": MAINTENANCE_QUEUE},
    PURGE_EVENTS: {"queue": MAINTENANCE_QUEUE},
    STARTUP_RECOVERY: {"queue": MAINTENANCE_QUEUE},
    NOTIFY_DISPATCH: {"queue": NOTIFICATIONS_QUEUE},
    NOTIFY_DELIVER: {"queue": NOTIFICATIONS_QUEUE},
    NOTIFY_DIGEST: {"queue": NOTIFICATIONS_QUEUE},
    DAILY_REPORT: {"queue": NOTIFICATIONS_QUEUE},
}

PIPELINE = (INTAKE, VALIDATE, CHECK_CONFLICT, SUBMIT)


def send_pipeline(app: Celery, first_arg: Any, start: str = INTAKE) -> None:
    """Enqueue the chain from `start` to the end: intake takes the signal, later steps the
    order id (each step hands its order id to the next)."""
    first, *rest = PIPELINE[PIPELINE.index(start) :]
    chain(app.signature(first, args=(first_arg,)), *(app.signature(n) for n in rest)).apply_async()
