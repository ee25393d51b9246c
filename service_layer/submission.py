"""Submission: an ORDER_PENDING order sent to the brokerage at most once per client_order_id.

Three short transactions around one brokerage call:
1. begin: lock the order, record the attempt (so reconciliation knows the brokerage may hold
   the order), or stop if it is no longer ORDER_PENDING, is flagged for review, or the kill
   switch stopped it before its first attempt. With the switch on and an attempt already
   made, the order is only looked up, never POSTed: found, it is cancelled at the brokerage;
   not found, it is CANCELLED here (reconciliation cancels a POST that lands later);
2. send once: on a retry, ask the brokerage by client_order_id before creating anything;
3. record the answer: ORDER_SENT and whatever fills it reports (through settlement), or
   REJECTED with the brokerage's reason.
A timeout leaves the outcome unknown: BrokerageUnavailable propagates (the task retries with
backoff) and the order stays ORDER_PENDING until the brokerage is asked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from core.brokerage import (
    Brokerage,
    BrokerOrder,
    OrderClass,
    OrderRequest,
    OrderType,
    Side,
    StopLoss,
    TakeProfit,
    TimeInForce,
)
from core.errors import (
    BrokerageProtocolError,
    BrokerageRejected,
    BrokerageUnavailable,
    DuplicateClientOrderId,
)
from core.states import OrderState, is_terminal
from core.states import TransitionCause as C
from db.clock import db_now
from db.engine import Database
from db.kill_switch import kill_switch_on
from db.models import Order
from db.order_manager import OrderManager
from service_layer import cancellation
from service_layer.settlement import release_unfilled_claim, settle

S = OrderState
ACTOR = "arbiter.submit"
_AT_BROKERAGE = (S.ORDER_SENT.value, S.PARTIAL_FILLED.value)


@dataclass(frozen=True)
class SubmitPlan:
    request: OrderRequest
    attempt: int
    # The kill switch is on and an earlier attempt may have reached the brokerage: look the
    # order up and cancel it there, never POST.
    withdraw: bool = False


def submit(
    database: Database,
    brokerage: Brokerage,
    order_id: int,
    *,
    on_order: Callable[[Order], None] = lambda _order: None,
    after_accepted: Callable[[], None] = lambda: None,
) -> None:
    """Send one order and record the brokerage's answer. `on_order` sees the locked order in
    each transaction (for log context); `after_accepted` runs between the brokerage's answer
    and its recording (a crash point for fault tests)."""
    with database.unit_of_work() as uow:
        plan = begin_submit(uow.session, order_id, on_order=on_order)
        uow.commit()
    if plan is None:
        return
    if plan.withdraw:
        withdraw(database, brokerage, order_id, plan, on_order=on_order)
        return
    try:
        report = send_once(brokerage, plan)
    except BrokerageRejected as exc:
        with database.unit_of_work() as uow:
            record_rejection(uow.session, order_id, exc.reason, on_order=on_order)
            uow.commit()
        return
    after_accepted()
    with database.unit_of_work() as uow:
        cancel_waiting = record_accepted(uow.session, order_id, report, on_order=on_order)
        uow.commit()
    if cancel_waiting:  # asked for while the submission was in flight: carried out now
        cancellation.carry_out(database, brokerage, order_id)


def begin_submit(
    session: Session, order_id: int, *, on_order: Callable[[Order], None] = lambda _o: None
) -> SubmitPlan | None:
    """Record a submit attempt before calling the brokerage. None when the order is not
    ORDER_PENDING any more, is flagged for review (a human decides), or the kill switch
    stopped it before its first attempt; a withdrawal plan when the switch is on after one."""
    manager = OrderManager(session)
    order = manager.lock(order_id)
    on_order(order)
    if order.state != S.ORDER_PENDING.value or order.needs_manual_review:
        return None
    if kill_switch_on(session):
        if order.submit_attempts == 0:
            manager.transition(
                order,
                S.CANCELLED,
                reason="kill switch is on: not sent",
                actor=ACTOR,
                cause=C.KILL_SWITCH,
            )
            release_unfilled_claim(session, order)
            return None
        return SubmitPlan(request_for(order), order.submit_attempts, withdraw=True)
    attempt = order.submit_attempts + 1
    # The database's clock: reconciliation compares it with its own now(), never a worker's.
    manager.update(order, submit_attempts=attempt, last_submit_at=db_now(session))
    return SubmitPlan(request_for(order), attempt)


def withdraw(
    database: Database,
    brokerage: Brokerage,
    order_id: int,
    plan: SubmitPlan,
    *,
    on_order: Callable[[Order], None] = lambda _o: None,
) -> None:
    """Kill switch on after an attempt: find the order at the brokerage and cancel it there
    (settling what it reports, a fill that beat the cancel included), or, when the brokerage
    does not have it, CANCEL it here. Nothing is ever POSTed."""
    coid = plan.request.client_order_id
    try:
        found = brokerage.get_by_client_order_id(coid)
        if found is not None and not is_terminal(found.state):
            with contextlib.suppress(BrokerageRejected):  # filled meanwhile: settled below
                brokerage.cancel(found.brokerage_order_id)
            found = brokerage.get_by_client_order_id(coid) or found
    except BrokerageProtocolError as exc:
        raise BrokerageUnavailable(f"unreadable brokerage answer: {exc}") from exc
    with database.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        order = manager.lock(order_id)
        on_order(order)
        if order.state == S.ORDER_PENDING.value:
            if found is not None:
                settle(uow.session, order, found, actor=ACTOR)
            else:
                manager.transition(
                    order,
                    S.CANCELLED,
                    reason="kill switch is on: not found at the brokerage, not sent again",
                    actor=ACTOR,
                    cause=C.KILL_SWITCH,
                )
                release_unfilled_claim(uow.session, order)
        uow.commit()


def send_once(brokerage: Brokerage, plan: SubmitPlan) -> BrokerOrder:
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


def record_accepted(
    session: Session,
    order_id: int,
    report: BrokerOrder,
    *,
    on_order: Callable[[Order], None] = lambda _o: None,
) -> bool:
    """The brokerage holds the order: settlement moves it to ORDER_SENT (with the brokerage's
    id) and books whatever fills the answer already carries. True when a cancel was asked
    for meanwhile and the order is still open at the brokerage."""
    order = OrderManager(session).lock(order_id)
    on_order(order)
    settle(session, order, report, actor=ACTOR)
    return order.cancel_requested_at is not None and order.state in _AT_BROKERAGE


def record_rejection(
    session: Session,
    order_id: int,
    reason: str,
    *,
    on_order: Callable[[Order], None] = lambda _o: None,
) -> None:
    manager = OrderManager(session)
    order = manager.lock(order_id)
    on_order(order)
    if order.state == S.ORDER_PENDING.value:
        manager.transition(
            order,
            S.REJECTED,
            reason=f"brokerage: {reason}",
            actor=ACTOR,
            cause=C.BROKERAGE_REPORT,
        )
        release_unfilled_claim(session, order)


def request_for(order: Order) -> OrderRequest:
    assert order.ticker and order.side and order.quantity is not None
    signal: dict[str, Any] = (order.order_metadata or {}).get("signal") or {}
    take_profit = signal.get("take_profit")
    stop_loss = signal.get("stop_loss")
    order_class = OrderClass(order.order_class)
    limit_price = order.limit_price
    if order_class is OrderClass.OCO and limit_price is None and take_profit:
        limit_price = Decimal(take_profit["limit_price"])  # an OCO's limit is its take-profit
    return OrderRequest(
        client_order_id=order.client_order_id,
        symbol=order.ticker,
        side=Side(order.side),
        quantity=order.quantity,
        order_type=OrderType(order.order_type),
        limit_price=limit_price,
        time_in_force=TimeInForce(order.time_in_force),
        stop_price=order.stop_price,
        trail_price=order.trail_price,
        trail_percent=order.trail_percent,
        order_class=order_class,
        take_profit=TakeProfit(Decimal(take_profit["limit_price"])) if take_profit else None,
        stop_loss=(
            StopLoss(
                Decimal(stop_loss["stop_price"]),
                Decimal(stop_loss["limit_price"]) if stop_loss.get("limit_price") else None,
            )
            if stop_loss
            else None
        ),
    )
