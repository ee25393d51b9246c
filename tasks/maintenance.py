"""Beat tasks: reconciliation with the brokerage, recovery of stalled orders, the event relay
and ownership housekeeping. Each run holds a Redis lock so that two beats, or a slow run and
the next, never overlap; a run that finds the lock held is skipped, not queued.

The tasks are thin: they take the lock, call one service of service_layer/ and return counts.
On worker start, one worker of the whole cluster sends `startup_recovery` (a Redis lock that is
left to expire, so that workers starting together run it once).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import redis
from celery import Celery, shared_task
from celery.signals import worker_ready, worker_shutdown
from redis.exceptions import LockError
from sqlalchemy import select

from core.event_payloads import ErrorOccurred, SystemChanged
from core.events import Event, EventType
from core.settings import Settings, get_settings, retry_backoff_max_s
from db import event_history
from db.clock import db_now
from db.engine import Database
from db.models import Order, ReviewItem
from db.outbox import emit
from service_layer import position_check, recovery
from service_layer import reconciliation as reconcile
from strategy_client import pending, routing
from tasks import backlog, metrics
from tasks.app import get_app
from tasks.crashpoints import crash_point
from tasks.runtime import runtime

log = logging.getLogger(__name__)

LOCK_PREFIX = "arbiter:beat-lock:"
SLOT_PREFIX = "arbiter:beat-slot:"
STARTUP_LOCK = "arbiter:startup-recovery"
STARTUP_LOCK_S = 300  # workers starting within this window share one recovery run
SKIPPED: dict[str, Any] = {"skipped": True}

# Where each pipeline step sits in routing.PIPELINE: a stalled order resumes from its step.
_STEP_TASKS = {name.removeprefix("arbiter."): name for name in routing.PIPELINE}


@contextmanager
def exclusive(name: str, timeout_s: float, client: redis.Redis | None = None) -> Iterator[bool]:
    """Hold `name`'s lock for the block; yields False (and holds nothing) when another run
    has it. The timeout lets a crashed holder's lock lapse; it sits above the task's expected
    duration (and the task time limit), so a live run never loses it."""
    client = client or runtime().redis
    lock = client.lock(LOCK_PREFIX + name, timeout=timeout_s, blocking=False)
    if not lock.acquire(blocking=False):
        log.info("%s: skipped, another run holds the lock", name)
        yield False
        return
    interval = _intervals().get(name)
    # Two beats started by mistake each send every run: the first to claim this interval's
    # slot does the work, the other's run is skipped.
    if interval and not client.set(
        SLOT_PREFIX + name, os.getpid(), nx=True, px=max(int(interval * 800), 1)
    ):
        log.info("%s: skipped, already run in this interval", name)
        lock.release()
        yield False
        return
    try:
        yield True
    finally:
        try:
            lock.release()
        except LockError:  # it lapsed: the run took longer than the timeout
            log.warning("%s: the run outlived its lock (%ss)", name, timeout_s)


def _intervals() -> dict[str, float]:
    """Each periodic task's interval (from settings, as the beat schedule uses them). Read
    from the settings alone: taking a lock needs Redis, not the database."""
    s = get_settings()
    return {
        routing.RECONCILE_ORDERS: s.reconcile_interval_s,
        routing.RECOVER_STALLED: s.recover_stalled_interval_s,
        routing.RECONCILE_POSITIONS: s.reconcile_positions_interval_s,
        routing.RELAY_EVENTS: s.relay_interval_s,
        routing.EXPIRE_OWNERSHIP: s.expire_locks_interval_s,
        routing.PURGE_EVENTS: s.purge_events_interval_s,
    }


def _lock_timeout() -> float:
    return float(get_settings().task_time_limit_s + 30)


@shared_task(name=routing.RECONCILE_ORDERS)
def reconcile_orders() -> dict[str, Any]:
    rt = runtime()
    with exclusive(routing.RECONCILE_ORDERS, _lock_timeout()) as held:
        if not held:
            return SKIPPED
        started = time.monotonic()
        report = reconcile.reconcile_open_orders(
            rt.database,
            rt.brokerage,
            never_received_grace_s=rt.settings.never_received_grace_s,
            actor=routing.RECONCILE_ORDERS,
            after_first_commit=lambda: crash_point("mid_reconciliation"),
        )
        metrics.record_reconcile_pass(rt.redis, time.monotonic() - started, report.counts())
    return report.counts()


def redrive(app: Celery, items: list[tuple[int, str]]) -> int:
    """Enqueue the rest of the pipeline for each stalled order, from its step on (each task
    is idempotent on the order's state, so a step that did run meanwhile does nothing)."""
    for order_id, step in items:
        routing.send_pipeline(app, order_id, start=_STEP_TASKS[step])
    return len(items)


@shared_task(name=routing.RECOVER_STALLED)
def recover_stalled() -> dict[str, Any]:
    rt = runtime()
    with exclusive(routing.RECOVER_STALLED, _lock_timeout()) as held:
        if not held:
            return SKIPPED
        return sweep(recover_stalled.app, rt.database, rt.redis, rt.settings)


PIPELINE_QUEUES = (routing.SIGNALS_QUEUE, routing.ORDERS_QUEUE)


def sweep(
    app: Celery, database: Database, client: redis.Redis, settings: Settings
) -> dict[str, Any]:
    """Re-drive stalled orders and resend lost signals; what merely waits behind a backlog is
    not stalled, so the backlog's age is added to every threshold."""
    # No live worker holds a delivery longer than a task may run plus its longest backoff.
    held_max_s = settings.task_time_limit_s + retry_backoff_max_s(settings.visibility_timeout_s)
    seen_waiting_s = backlog.oldest_waiting_s(client, PIPELINE_QUEUES, held_max_s=held_max_s)
    # A backlog first seen now may be as old as one sweep interval (the watch's resolution).
    waiting_s = (
        0.0 if seen_waiting_s is None else seen_waiting_s + settings.recover_stalled_interval_s
    )
    found = recovery.find_stalled(database, stalled_after_s=settings.stalled_after_s + waiting_s)
    redrive(app, found.redrive)
    resent, dead = resend_lost_signals(app, database, client, settings, waiting_s=waiting_s)
    return {
        "redriven": len(found.redrive),
        "flagged": found.flagged + dead,
        "resent": resent,
        "waiting_s": round(waiting_s, 1),
    }


def resend_lost_signals(
    app: Celery,
    database: Database,
    client: redis.Redis,
    settings: Settings,
    *,
    waiting_s: float = 0.0,
) -> tuple[int, int]:
    """Signals the client noted but intake never recorded (strategy_client/pending.py): those
    with an order already are forgotten, the others enqueued again; one resent
    `pending_max_resends` times goes to review instead (a dead letter). (resent, dead)."""
    overdue = pending.overdue(client, older_than_s=2 * settings.stalled_after_s + waiting_s)
    if not overdue:
        return 0, 0
    with database.unit_of_work() as uow:
        recorded = set(
            uow.session.scalars(
                select(Order.client_order_id).where(Order.client_order_id.in_(list(overdue)))
            )
        )
    resent = dead = 0
    for client_order_id, entry in overdue.items():
        if client_order_id in recorded:
            pending.forget(client, client_order_id)
            continue
        if entry.resends >= settings.pending_max_resends:
            _dead_letter(database, client_order_id, entry)
            pending.forget(client, client_order_id)
            dead += 1
            continue
        log.warning("signal %s was never recorded: enqueueing it again", client_order_id)
        # Restarts its clock and counts the resend.
        pending.remember(client, client_order_id, entry.message, resends=entry.resends + 1)
        routing.send_pipeline(app, entry.message)
        resent += 1
    return resent, dead


def _dead_letter(database: Database, client_order_id: str, entry: pending.Entry) -> None:
    """A signal intake never recorded after every resend: a review item and an event."""
    reason = (
        f"signal {client_order_id} was resent {entry.resends} times and never recorded: "
        "intake cannot take it (see the worker log); it is no longer resent"
    )
    log.error("%s", reason)
    message = entry.message if isinstance(entry.message, dict) else {}
    ticker = message.get("ticker") if isinstance(message.get("ticker"), str) else None
    with database.unit_of_work() as uow:
        details = {"client_order_id": client_order_id, "message": jsonable_message(message)}
        uow.session.add(
            ReviewItem(
                kind="signal", ticker=(ticker or "")[:16] or None, reason=reason, details=details
            )
        )
        emit(
            uow.session,
            Event.of(
                EventType.ERROR_OCCURRED,
                ErrorOccurred(kind="dead_letter", task=routing.RECOVER_STALLED, error=reason),
                source=routing.RECOVER_STALLED,
                client_order_id=client_order_id,
            ),
        )
        uow.commit()


def jsonable_message(message: dict[str, Any]) -> dict[str, Any]:
    """The dead letter's message for the review item, without its signature, capped."""
    text = json.dumps({k: v for k, v in message.items() if k != "signature"}, default=str)
    return {"json": text[:10_000]}


@shared_task(name=routing.RECONCILE_POSITIONS)
def reconcile_positions() -> dict[str, Any]:
    rt = runtime()
    with exclusive(routing.RECONCILE_POSITIONS, _lock_timeout()) as held:
        if not held:
            return SKIPPED
        mismatches = position_check.reconcile_positions(rt.database, rt.brokerage)
        metrics.record_position_mismatches(rt.redis, len(mismatches))
    return {
        "mismatches": len(mismatches),
        "confirmed": sum(m.confirmed for m in mismatches),
        "opened": sum(m.review_opened for m in mismatches),
    }


@shared_task(name=routing.RELAY_EVENTS)
def relay_events() -> int:
    from db.publisher import relay_unpublished

    rt = runtime()
    with exclusive(routing.RELAY_EVENTS, _lock_timeout()) as held:
        if not held:
            return 0
        return relay_unpublished(rt.database, rt.publisher, min_age_s=rt.settings.relay_min_age_s)


@shared_task(name=routing.EXPIRE_OWNERSHIP)
def expire_ownership() -> dict[str, Any]:
    rt = runtime()
    with exclusive(routing.EXPIRE_OWNERSHIP, _lock_timeout()) as held:
        if not held:
            return SKIPPED
        with rt.database.unit_of_work() as uow:
            now = db_now(uow.session)
        since = now - timedelta(seconds=rt.settings.expire_locks_interval_s)
        released = recovery.expire_ownership(rt.database)
        expired = recovery.locks_expired_between(rt.database, since, now)
    if released or expired:
        log.info("ownership: %d stale claims released, %d locks ran out", released, expired)
    return {"released": released, "locks_expired": expired}


# One run deletes at most this many batches; the next run goes on (bounded run time and locks).
PURGE_MAX_BATCHES = 100


@shared_task(name=routing.PURGE_EVENTS)
def purge_events() -> dict[str, Any]:
    """Retention: delete published events older than ARBITER_EVENT_RETENTION_DAYS, in bounded
    batches; events the relay still owes are never deleted. 0 days keeps everything."""
    rt = runtime()
    days = rt.settings.event_retention_days
    if days <= 0:
        return {"skipped": True, "reason": "ARBITER_EVENT_RETENTION_DAYS is 0 (keep forever)"}
    with exclusive(routing.PURGE_EVENTS, _lock_timeout()) as held:
        if not held:
            return SKIPPED
        report = event_history.purge_history(
            rt.database, timedelta(days=days), max_batches=PURGE_MAX_BATCHES
        )
    if report.deleted:
        log.info("retention: %d events older than %s deleted", report.deleted, report.cutoff)
    return report.as_dict()


@shared_task(name=routing.STARTUP_RECOVERY)
def startup_recovery() -> dict[str, Any]:
    from db.publisher import relay_unpublished

    rt = runtime()
    with exclusive(routing.STARTUP_RECOVERY, _lock_timeout()) as held:
        if not held:
            return SKIPPED
        counts = recovery.startup_recovery(
            rt.database,
            rt.brokerage,
            rt.settings,
            relay=lambda: relay_unpublished(rt.database, rt.publisher),
            actor=routing.STARTUP_RECOVERY,
        )
        redrive(startup_recovery.app, [(int(i), str(s)) for i, s in counts.pop("redrive")])
    return counts


def _announce(event_type: EventType, sender: Any) -> None:
    """SYSTEM_STARTED / SYSTEM_STOPPED for one worker, best effort."""
    try:
        with runtime().database.unit_of_work() as uow:
            emit(
                uow.session,
                Event.of(event_type, SystemChanged(worker=str(sender or "")), source="worker"),
            )
            uow.commit()
    except Exception:
        log.exception("could not record %s", event_type.value)


@worker_shutdown.connect
def _announce_stop(sender: Any = None, **_: Any) -> None:
    _announce(EventType.SYSTEM_STOPPED, getattr(sender, "hostname", sender))


@worker_ready.connect
def _recover_on_start(sender: Any = None, **_: Any) -> None:
    """One recovery per cluster start: the first worker to take the lock sends the task; the
    lock is left to expire rather than released, so workers starting together skip it."""
    _announce(EventType.SYSTEM_STARTED, getattr(sender, "hostname", sender))
    try:
        taken = runtime().redis.set(STARTUP_LOCK, str(os.getpid()), nx=True, ex=STARTUP_LOCK_S)
        if taken:
            app = getattr(sender, "app", None) or get_app()
            app.send_task(routing.STARTUP_RECOVERY)
            log.info("startup recovery sent")
    except Exception:  # never keep a worker from starting; the beat reconciles anyway
        log.exception("could not send startup recovery")
