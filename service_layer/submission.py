"""Submission: an ORDER_PENDING order sent to the brokerage at most once per client_order_id.

Three short transactions around one brokerage call:
1. begin: lock the order, record the attempt (so reconciliation knows the brokerage may hold
   the order), or stop if it is no longer ORDER_PENDING or the kill switch is on;
2. send once: on a retry, ask the brokerage by client_order_id before creating anything;
3. record the answer: ORDER_SENT and whatever fills it reports (through settlement), or
   REJECTED with the brokerage's reason.
A timeout leaves the outcome unknown: BrokerageUnavailable propagates (the task retries with
backoff) and the order stays ORDER_PENDING until the brokerage is asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from core.brokerage import Brokerage, BrokerOrder, OrderRequest, OrderType, Side, TimeInForce
from core.errors import (
    BrokerageProtocolError,
    BrokerageRejected,
    BrokerageUnavailable,
    DuplicateClientOrderId,
)
from core.states import OrderState
from core.states import TransitionCause as C
from db.engine import Database
from db.kill_switch import kill_switch_on
from db.models import Order
from db.order_manager import OrderManager
from service_layer.settlement import release_unfilled_claim, settle

S = OrderState
ACTOR = "arbiter.submit"


@dataclass(frozen=True)
class SubmitPlan:
    request: OrderRequest
    attempt: int


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
    try:
        report = send_once(brokerage, plan)
    except BrokerageRejected as exc:
        with database.unit_of_work() as uow:
            record_rejection(uow.session, order_id, exc.reason, on_order=on_order)
            uow.commit()
        return
    after_accepted()
    with database.unit_of_work() as uow:
        record_accepted(uow.session, order_id, report, on_order=on_order)
        uow.commit()


def begin_submit(
    session: Session, order_id: int, *, on_order: Callable[[Order], None] = lambda _o: None
) -> SubmitPlan | None:
    """Record a submit attempt before calling the brokerage. None when the order is not
    ORDER_PENDING any more, or the kill switch stopped it before its first attempt."""
    manager = OrderManager(session)
    order = manager.lock(order_id)
    on_order(order)
    if order.state != S.ORDER_PENDING.value:
        return None
    if order.submit_attempts == 0 and kill_switch_on(session):
        manager.transition(
            order,
            S.CANCELLED,
            reason="kill switch is on: not sent",
            actor=ACTOR,
            cause=C.KILL_SWITCH,
        )
        release_unfilled_claim(session, order)
        return None
    attempt = order.submit_attempts + 1
    manager.update(order, submit_attempts=attempt, last_submit_at=datetime.now(UTC))
    return SubmitPlan(request_for(order), attempt)


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
) -> None:
    """The brokerage holds the order: settlement moves it to ORDER_SENT (with the brokerage's
    id) and books whatever fills the answer already carries."""
    order = OrderManager(session).lock(order_id)
    on_order(order)
    settle(session, order, report, actor=ACTOR)


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
    return OrderRequest(
        client_order_id=order.client_order_id,
        symbol=order.ticker,
        side=Side(order.side),
        quantity=order.quantity,
        order_type=OrderType(order.order_type),
        limit_price=order.limit_price,
        time_in_force=TimeInForce(order.time_in_force),
    )
