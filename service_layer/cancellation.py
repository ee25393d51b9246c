"""Cancelling one order, in whatever state it is (SPEC §9).

- Before submission (SIGNAL_RECEIVED, VALIDATING, or ORDER_PENDING never sent): CANCELLED at
  once, under the order's row lock, so the next chain step finds it final and does nothing.
- Submission in flight (ORDER_PENDING with an attempt): the request is recorded; it is carried
  out once the submission's outcome is known (`carry_out`, called by submission and by
  reconciliation).
- At the brokerage (ORDER_SENT, PARTIAL_FILLED): the request is recorded (ORDER_CANCEL_REQUESTED),
  sent, and the order becomes CANCELLED only when the brokerage says so, through settlement, so
  that fills which raced the cancel are booked.
- CANCELLED already: nothing to do (a repeated cancel is harmless). Any other final state:
  OrderNotOpen, naming it.

`cancel_order` is the one entry point (CLI, API, the strategy client's task).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.brokerage import Brokerage
from core.errors import BrokerageRejected, BrokerageUnavailable, InvalidInput, OrderNotOpen
from core.states import OrderState, TransitionCause, is_terminal
from db.clock import db_now
from db.engine import Database
from db.models import Order
from db.order_manager import OrderManager
from service_layer.settlement import release_unfilled_claim, settle

log = logging.getLogger(__name__)
S = OrderState
ACTOR = "arbiter.cancel"

BEFORE_BROKERAGE = frozenset({S.SIGNAL_RECEIVED, S.VALIDATING})
AT_BROKERAGE = frozenset({S.ORDER_SENT, S.PARTIAL_FILLED})


class UnknownOrder(InvalidInput):
    """No order by that id or client_order_id (a signal still queued, or a wrong key)."""


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # final now: before submission, or the brokerage confirmed
    REQUESTED = "requested"  # recorded; the brokerage's confirmation (or the submit) is awaited
    ALREADY_CANCELLED = "already_cancelled"
    FILLED = "filled"  # the brokerage filled it before the cancel reached it


@dataclass(frozen=True)
class CancelResult:
    order_id: int
    client_order_id: str
    outcome: CancelOutcome
    state: str
    message: str


def find_order(session: Session, order_ref: int | str) -> Order:
    """By numeric id (an int, or a string of digits) or by client_order_id."""
    ref = str(order_ref).strip()
    order = (
        session.get(Order, int(ref))
        if ref.isdigit()
        else session.scalar(select(Order).where(Order.client_order_id == ref))
    )
    if order is None:
        raise UnknownOrder(f"no order {ref!r}")
    return order


def cancel_order(
    database: Database,
    brokerage: Brokerage,
    order_ref: int | str,
    *,
    requested_by: str,
    strategy: str | None = None,
) -> CancelResult:
    """Cancel one order by id or client_order_id; see the module docstring. Raises
    OrderNotOpen on a final order other than CANCELLED, InvalidInput on an unknown one (or,
    with `strategy`, on another strategy's order: a strategy cancels only its own)."""
    with database.unit_of_work() as uow:
        order = find_order(uow.session, order_ref)
        if strategy is not None and order.strategy_name != strategy:
            raise InvalidInput(f"order {order_ref!r} is not {strategy}'s")
        result, send = _record(uow.session, order.id, requested_by)
        uow.commit()
    if not send:
        return result
    return carry_out(database, brokerage, result.order_id) or result


def _record(session: Session, order_id: int, requested_by: str) -> tuple[CancelResult, bool]:
    """Under the order's lock: cancel at once, or record the request. True: send it now."""
    manager = OrderManager(session)
    order = manager.lock(order_id)
    state = OrderState(order.state)
    if state is S.CANCELLED:
        return _result(order, CancelOutcome.ALREADY_CANCELLED, "already cancelled"), False
    if is_terminal(state) or state is S.IDLE:
        raise OrderNotOpen(f"{order.id} ({order.client_order_id})", state.value)
    if state in BEFORE_BROKERAGE or (state is S.ORDER_PENDING and order.submit_attempts == 0):
        manager.transition(
            order,
            S.CANCELLED,
            reason=f"cancelled by {requested_by} before submission",
            actor=ACTOR,
            cause=TransitionCause.CANCEL_REQUEST,
            cancel_requested_at=db_now(session),
            cancel_requested_by=requested_by,
        )
        release_unfilled_claim(session, order)
        return _result(order, CancelOutcome.CANCELLED, "cancelled before submission"), False
    manager.request_cancel(order, requested_by=requested_by, actor=ACTOR)
    if state is S.ORDER_PENDING:
        message = "cancel recorded: carried out once the submission's outcome is known"
        return _result(order, CancelOutcome.REQUESTED, message), False
    message = "cancel requested at the brokerage; CANCELLED once it confirms"
    return _result(order, CancelOutcome.REQUESTED, message), True


def carry_out(database: Database, brokerage: Brokerage, order_id: int) -> CancelResult | None:
    """Send a recorded cancel request for an order at the brokerage and settle its answer.
    None when there is nothing to send (no request, or the order is not at the brokerage).
    A brokerage that cannot be reached leaves the request recorded: reconciliation sends it
    on a later pass."""
    with database.unit_of_work() as uow:
        order = OrderManager(uow.session).lock(order_id)
        state = OrderState(order.state)
        if order.cancel_requested_at is None or state not in AT_BROKERAGE:
            return None
        brokerage_id = order.brokerage_order_id
        uow.commit()
    if brokerage_id is None:
        return None
    try:
        brokerage.cancel(brokerage_id)
    except BrokerageRejected as exc:  # e.g. 422: already filled, or pending cancel
        log.info("brokerage refused to cancel %s (%s): settling what it reports", order_id, exc)
    except BrokerageUnavailable as exc:
        log.warning("cancel of order %s not sent (%s): reconciliation retries", order_id, exc)
        return None
    try:
        report = brokerage.get(brokerage_id)
    except BrokerageUnavailable:
        return None  # reconciliation settles it
    with database.unit_of_work() as uow:
        order = OrderManager(uow.session).lock(order_id)
        settle(uow.session, order, report, actor=ACTOR)
        uow.commit()
        return _after_send(order)


def _after_send(order: Order) -> CancelResult:
    state = OrderState(order.state)
    if state is S.CANCELLED:
        message = "cancelled by the brokerage"
        if order.filled_quantity:
            message += f" after {order.filled_quantity} filled (the fills are booked)"
        return _result(order, CancelOutcome.CANCELLED, message)
    if state is S.FULLY_FILLED:
        return _result(order, CancelOutcome.FILLED, "filled before the cancel reached it")
    return _result(
        order, CancelOutcome.REQUESTED, "cancel sent; CANCELLED once the brokerage confirms"
    )


def _result(order: Order, outcome: CancelOutcome, message: str) -> CancelResult:
    return CancelResult(order.id, order.client_order_id, outcome, order.state, message)
