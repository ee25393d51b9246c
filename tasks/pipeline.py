"""The signal pipeline: intake -> validate -> check_conflict -> submit, chained.

Each task takes an order id, opens a unit of work, calls one service of service_layer/, commits
and returns the id for the next link. Every step is idempotent on the order's state, so a
redelivered or re-enqueued task does nothing harmful.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.signals import task_failure, task_postrun
from sqlalchemy.exc import InterfaceError as DBInterfaceError
from sqlalchemy.exc import OperationalError as DBOperationalError

from core.errors import BrokerageUnavailable, InvalidInput
from core.event_payloads import ErrorOccurred
from core.events import Event, EventType
from core.settings import Settings
from db.engine import UnitOfWork
from db.order_manager import locked_orders
from db.outbox import emit
from service_layer import conflict_check, submission, validation
from service_layer import intake as intake_service
from strategy_client import pending, routing
from tasks.crashpoints import crash_point
from tasks.logs import bind_order_of
from tasks.runtime import runtime

log = logging.getLogger(__name__)

# Worth another try, with backoff: the brokerage or Postgres hiccupped (a timeout, a dropped
# connection, a deadlock). Every step is idempotent, so a retry is harmless. The longest
# backoff stays far below the visibility timeout, so a retry is never also redelivered.
TRANSIENT = (BrokerageUnavailable, DBOperationalError, DBInterfaceError)


class PipelineTask(Task):  # type: ignore[misc]
    """Retries transient errors with exponential backoff and jitter. The backoff ceiling and
    the number of retries come from the app's configuration (tasks/app.py, from settings),
    read when the task is bound and when it retries, never at import."""

    autoretry_for = TRANSIENT
    retry_backoff = 1
    retry_jitter = True

    @property
    def retry_backoff_max(self) -> int:
        return int(self.app.conf.arbiter_retry_backoff_max)

    @property
    def max_retries(self) -> int:
        return int(self.app.conf.arbiter_max_retries)


@shared_task(name=routing.INTAKE, bind=True, base=PipelineTask)
def intake(self: Task, *args: Any, **kwargs: Any) -> int | None:
    """Record the signal. Any message shape is accepted here, so that a malformed one is
    recorded REJECTED with its reason instead of failing in Celery's argument binding. A
    signal over its intake bound is dropped unrecorded and the rest of the chain with it."""
    raw_signal = args[0] if len(args) == 1 and not kwargs else {"args": args, "kwargs": kwargs}
    rt = runtime()
    order_id = intake_service.intake_signal(
        rt.database,
        raw_signal,
        actor=routing.INTAKE,
        message_id=str(self.request.id),
        bounds=intake_bounds(rt.settings),
        on_order=bind_order_of,
    )
    _forget_pending(raw_signal)
    if order_id is None:
        self.request.chain = None  # nothing to validate: the later links are not sent
    return order_id


def intake_bounds(settings: Settings) -> intake_service.IntakeBounds:
    return intake_service.IntakeBounds(
        per_minute=settings.intake_max_per_minute,
        untrusted_per_minute=settings.intake_max_untrusted_per_minute,
        signal_max_age_s=settings.signal_max_age_s,
    )


def _forget_pending(raw_signal: Any) -> None:
    """The signal is an order now: the client's safety copy can go (strategy_client/pending.py)."""
    key = pending.key_of(raw_signal)
    if key is not None:
        pending.forget(runtime().redis, key)


def _bind_log_context(uow: UnitOfWork) -> None:
    """The rest of this task's log lines name its order (id, client_order_id, strategy,
    ticker)."""
    for order in locked_orders(uow.session):
        bind_order_of(order)


def _order_id(value: Any) -> int:
    """Steps after intake take an order id; anything else is a malformed message."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"expected an order id, got {value!r}")
    return value


@shared_task(name=routing.VALIDATE, base=PipelineTask)
def validate(order_id: int) -> int:
    order_id = _order_id(order_id)
    rt = runtime()
    with rt.database.unit_of_work() as uow:
        validation.validate(
            uow.session,
            order_id,
            rt.risk_limits,
            actor=routing.VALIDATE,
            reference_price=rt.reference_prices.price,
        )
        _bind_log_context(uow)
        uow.commit()
    return order_id


@shared_task(name=routing.CHECK_CONFLICT, base=PipelineTask)
def check_conflict(order_id: int) -> int:
    order_id = _order_id(order_id)
    with runtime().database.unit_of_work() as uow:
        conflict_check.check_conflict(uow.session, order_id, actor=routing.CHECK_CONFLICT)
        _bind_log_context(uow)
        uow.commit()
    return order_id


@shared_task(name=routing.SUBMIT, base=PipelineTask)
def submit(order_id: int) -> int:
    """Send the order to the brokerage at most once per client_order_id
    (service_layer/submission.py). When retries run out the order stays ORDER_PENDING and
    reconciliation settles it."""
    order_id = _order_id(order_id)
    rt = runtime()
    submission.submit(
        rt.database,
        rt.brokerage,
        order_id,
        on_order=bind_order_of,
        after_accepted=lambda: crash_point("after_brokerage_accepted"),
    )
    return order_id


@task_postrun.connect
def _after_task(**_: Any) -> None:
    # The next link of the chain is published by now; the message is not acked yet.
    crash_point("before_ack")


@task_failure.connect
def _announce_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    **_: Any,
) -> None:
    """A pipeline task that failed for good (retries spent, or a malformed message) is an
    ERROR_OCCURRED event, so operators see it beside the order's other events."""
    name = getattr(sender, "name", "")
    if name not in routing.PIPELINE:
        return
    first = args[0] if isinstance(args, list | tuple) and args else None
    order_id = first if isinstance(first, int) and not isinstance(first, bool) else None
    error = f"{type(exception).__name__}: {exception}"[:2000]
    try:
        with runtime().database.unit_of_work() as uow:
            emit(
                uow.session,
                Event.of(
                    EventType.ERROR_OCCURRED,
                    ErrorOccurred(task=name, task_id=task_id, error=error),
                    source=name,
                    order_id=order_id,
                ),
            )
            uow.commit()
    except Exception:  # the log still has it; never fail the failure handling
        log.exception("could not record the failure of %s", name)
