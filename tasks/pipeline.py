"""The signal pipeline: intake -> validate -> check_conflict -> submit, chained.

Each task takes an order id, opens a unit of work, calls one step in db/pipeline.py, commits
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

from core.brokerage import Brokerage, BrokerOrder
from core.errors import (
    BrokerageProtocolError,
    BrokerageRejected,
    BrokerageUnavailable,
    DuplicateClientOrderId,
    InvalidInput,
)
from core.events import Event, EventType
from core.settings import get_settings
from core.signals import client_order_id_for
from core.states import OrderState
from db import pipeline as steps
from db.engine import UnitOfWork
from db.order_manager import OrderManager, locked_orders
from db.outbox import emit
from db.pipeline import SubmitPlan
from db.settlement import release_unfilled_claim, settle
from tasks import pending, routing
from tasks.crashpoints import crash_point
from tasks.logs import bind_order_of
from tasks.runtime import runtime

log = logging.getLogger(__name__)

# Worth another try, with backoff: the brokerage or Postgres hiccupped (a timeout, a dropped
# connection, a deadlock). Every step is idempotent, so a retry is harmless. The longest
# backoff stays far below the visibility timeout, so a retry is never also redelivered.
TRANSIENT = (BrokerageUnavailable, DBOperationalError, DBInterfaceError)
RETRY: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": max(1, min(30, get_settings().visibility_timeout_s // 3)),
    "retry_jitter": True,
    "max_retries": get_settings().submit_max_retries,
}


@shared_task(name=routing.INTAKE, bind=True, **RETRY)
def intake(self: Task, *args: Any, **kwargs: Any) -> int:
    """Record the signal. Any message shape is accepted here, so that a malformed one is
    recorded REJECTED with its reason instead of failing in Celery's argument binding."""
    raw_signal = args[0] if len(args) == 1 and not kwargs else {"args": args, "kwargs": kwargs}
    with runtime().database.unit_of_work() as uow:
        order_id = steps.intake(
            uow.session, raw_signal, actor=routing.INTAKE, message_id=str(self.request.id)
        )
        _bind_log_context(uow)
        uow.commit()
    _forget_pending(raw_signal)
    return order_id


def _forget_pending(raw_signal: Any) -> None:
    """The signal is an order now: the client's safety copy can go (tasks/pending.py)."""
    if not isinstance(raw_signal, dict):
        return
    strategy, signal_id = raw_signal.get("strategy"), raw_signal.get("signal_id")
    if isinstance(strategy, str) and isinstance(signal_id, str):
        pending.forget(runtime().redis, client_order_id_for(strategy, signal_id))


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


@shared_task(name=routing.VALIDATE, **RETRY)
def validate(order_id: int) -> int:
    order_id = _order_id(order_id)
    rt = runtime()
    with rt.database.unit_of_work() as uow:
        steps.validate(uow.session, order_id, rt.risk_limits, actor=routing.VALIDATE)
        _bind_log_context(uow)
        uow.commit()
    return order_id


@shared_task(name=routing.CHECK_CONFLICT, **RETRY)
def check_conflict(order_id: int) -> int:
    order_id = _order_id(order_id)
    with runtime().database.unit_of_work() as uow:
        steps.check_conflict(uow.session, order_id, actor=routing.CHECK_CONFLICT)
        _bind_log_context(uow)
        uow.commit()
    return order_id


@shared_task(name=routing.SUBMIT, **RETRY)
def submit(order_id: int) -> int:
    """Send the order to the brokerage at most once per client_order_id.

    The attempt is recorded before the call, so a crash after the brokerage accepted is seen
    by the next attempt (which asks by client_order_id first) or by reconciliation. When
    retries run out the order stays ORDER_PENDING and reconciliation settles it."""
    order_id = _order_id(order_id)
    rt = runtime()
    with rt.database.unit_of_work() as uow:
        plan = steps.begin_submit(uow.session, order_id)
        uow.commit()
    if plan is None:
        return order_id

    try:
        report = _send_once(rt.brokerage, plan)
    except BrokerageRejected as exc:
        _record_rejection(order_id, exc.reason)
        return order_id
    crash_point("after_brokerage_accepted")

    with rt.database.unit_of_work() as uow:
        order = OrderManager(uow.session).lock(order_id)
        bind_order_of(order)
        if order.state == OrderState.ORDER_PENDING.value and report.state is OrderState.ORDER_SENT:
            OrderManager(uow.session).transition(
                order,
                OrderState.ORDER_SENT,
                reason="accepted by the brokerage",
                actor=routing.SUBMIT,
                brokerage_order_id=report.brokerage_order_id,
            )
        settle(uow.session, order, report, actor=routing.SUBMIT)
        uow.commit()
    return order_id


def _send_once(brokerage: Brokerage, plan: SubmitPlan) -> BrokerOrder:
    """The brokerage's order for this client_order_id: looked up first on a retry, created
    otherwise. An unreadable answer leaves the outcome unknown: retried like a timeout."""
    coid = plan.request.client_order_id
    try:
        found = brokerage.get_by_client_order_id(coid) if plan.attempt > 1 else None
        if found is not None:
            return found
        try:
            return brokerage.submit(plan.request)
        except DuplicateClientOrderId:
            found = brokerage.get_by_client_order_id(coid)
            if found is None:
                raise BrokerageUnavailable("duplicate reported but order not found yet") from None
            return found
    except BrokerageProtocolError as exc:
        raise BrokerageUnavailable(f"unreadable brokerage answer: {exc}") from exc


def _record_rejection(order_id: int, reason: str) -> None:
    with runtime().database.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        order = manager.lock(order_id)
        bind_order_of(order)
        if order.state == OrderState.ORDER_PENDING.value:
            manager.transition(
                order, OrderState.REJECTED, reason=f"brokerage: {reason}", actor=routing.SUBMIT
            )
            release_unfilled_claim(uow.session, order)
        uow.commit()


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
                Event(
                    type=EventType.ERROR_OCCURRED,
                    source=name,
                    order_id=order_id,
                    payload={"task": name, "task_id": task_id, "error": error},
                ),
            )
            uow.commit()
    except Exception:  # the log still has it; never fail the failure handling
        log.exception("could not record the failure of %s", name)
