"""Settling an order against what the brokerage reports: the one place where brokerage
truth (status, cumulative fills) turns into transitions, fills and positions.

Submit, reconciliation and retries all come through here. core/settlement.py decides what a
report means (a plan); this module applies the plan under the order's row lock, so a fill is
booked exactly once whichever of them sees it first (keyed by brokerage order and cumulative
quantity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.brokerage import STOP_TYPES, BrokerOrder, Side
from core.event_payloads import StopLossTriggered
from core.events import EventType
from core.settlement import ACCEPTED, BookFill, Move, Review, plan_settlement
from core.states import OrderState, TransitionCause, is_terminal
from db.models import Fill, Order
from db.order_manager import OrderManager, order_event
from db.outbox import emit
from db.ownership import current_owner, lock_ticker, release_if_unused, unlock
from db.positions import book_fill


@dataclass
class Settlement:
    transitions: list[str] = field(default_factory=list)
    filled: bool = False
    flagged: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.transitions or self.filled or self.flagged)


def settle(session: Session, order: Order, report: BrokerOrder, *, actor: str) -> Settlement:
    """Bring `order` (row-locked by the caller through the OrderManager) in line with `report`."""
    manager = OrderManager(session)
    result = Settlement()
    if order.brokerage_order_id is None:
        manager.update(order, brokerage_order_id=report.brokerage_order_id)
    plan = plan_settlement(
        OrderState(order.state), order.filled_quantity, order.avg_fill_price, report
    )
    legs_settled = not report.legs
    for step in plan.steps:
        if not legs_settled and (
            isinstance(step, Review) or (isinstance(step, Move) and step.reason != ACCEPTED)
        ):
            # A bracket's or OCO's legs after the parent's acceptance and fills, before its
            # final word (as they happened at the brokerage).
            settle_legs(session, order, report, actor=actor)
            legs_settled = True
        if isinstance(step, Move):
            manager.transition(
                order,
                step.target,
                reason=step.reason,
                actor=actor,
                cause=TransitionCause.BROKERAGE_REPORT,
            )
            result.transitions.append(step.target.value)
        elif isinstance(step, BookFill):
            result.filled = _book_fill(session, order, report, step, actor=actor)
        elif isinstance(step, Review):
            manager.flag_for_review(order, step.reason, actor=actor)
            result.flagged = step.reason
    if not legs_settled:
        settle_legs(session, order, report, actor=actor)
    if is_terminal(OrderState(order.state)):
        if order.side == Side.BUY.value:
            release_unfilled_claim(session, order)
        elif order.ticker is not None and order.strategy_id is not None:
            # The last live order of a flat owner (say, the leg an OCO cancelled) ending.
            lock_ticker(session, order.ticker)
            release_if_unused(session, order.ticker, order.strategy_id, reason="position closed")
    return result


def settle_legs(session: Session, parent: Order, report: BrokerOrder, *, actor: str) -> int:
    """A bracket's, OCO's or OTO's other orders: each an order row of its own, linked to its
    parent and booked to the parent's strategy, then settled like any order. Returns how many
    legs were recorded for the first time."""
    created = 0
    for leg in report.legs:
        row = OrderManager(session).find_by_client_order_id(leg.client_order_id)
        if row is None:
            row, new = _record_leg(session, parent, leg, actor=actor)
            created += new
        if row.parent_order_id != parent.id:
            continue  # a client_order_id that is not this parent's leg: never settle it here
        OrderManager(session).lock(row.id)
        settle(session, row, leg, actor=actor)
    return created


def leg_role(parent: Order, leg: BrokerOrder) -> str:
    """take_profit (the limit leg) or stop_loss (the stop leg), as Alpaca names them."""
    return "stop_loss" if leg.order_type in STOP_TYPES else "take_profit"


def _record_leg(
    session: Session, parent: Order, leg: BrokerOrder, *, actor: str
) -> tuple[Order, bool]:
    role = leg_role(parent, leg)
    protective = role == "stop_loss" and leg.side is Side.SELL
    return OrderManager(session).create_derived(
        {
            "client_order_id": leg.client_order_id,
            "strategy_id": parent.strategy_id,
            "strategy_name": parent.strategy_name,
            "signal_id": f"{parent.signal_id}~{role}"[-128:],
            "ticker": leg.symbol,
            "side": leg.side.value,
            "quantity": leg.quantity,
            "order_type": leg.order_type.value,
            "limit_price": leg.limit_price,
            "stop_price": leg.stop_price,
            "trail_price": leg.trail_price,
            "trail_percent": leg.trail_percent,
            "time_in_force": leg.time_in_force.value,
            "order_class": parent.order_class,
            "parent_order_id": parent.id,
            "leg_role": role,
            "protective": protective,
            "conflict_check_passed": parent.conflict_check_passed,
            "conflict_reasoning": f"{role} leg of order {parent.id}",
            "order_metadata": {"parent": parent.client_order_id, "leg_role": role},
        },
        actor=actor,
        reason=f"{role} leg of order {parent.id} ({parent.order_class})",
        cause=TransitionCause.BROKERAGE_REPORT,
    )


def _stop_loss_triggered(
    session: Session, order: Order, quantity: Decimal, price: Decimal, *, actor: str
) -> None:
    """A protective stop's first fill: POSITION_STOP_LOSS_TRIGGERED, and the ticker's
    ownership lock ends at once (the ownership itself ends when the position is flat)."""
    assert order.ticker is not None
    row = current_owner(session, order.ticker)
    lock_released = (
        row is not None
        and row.strategy_id == order.strategy_id
        and unlock(session, row, f"stop-loss order {order.id} filled")
    )
    emit(
        session,
        order_event(
            order,
            EventType.POSITION_STOP_LOSS_TRIGGERED,
            StopLossTriggered(
                ticker=order.ticker,
                strategy=order.strategy_name,
                quantity=quantity,
                order_quantity=order.quantity,
                stop_price=order.stop_price,
                fill_price=price,
                order_id=order.id,
                parent_order_id=order.parent_order_id,
                lock_released=lock_released,
                actor=actor,
            ),
        ),
    )


_INSERT_FILL = (  # built once: every fill runs it
    insert(Fill)
    .values(
        order_id=bindparam("order_id"),
        fill_key=bindparam("fill_key"),
        quantity=bindparam("quantity"),
        price=bindparam("price"),
        filled_at=bindparam("filled_at"),
    )
    .on_conflict_do_nothing(index_elements=["fill_key"])
    .returning(Fill.id)
)


def _book_fill(
    session: Session, order: Order, report: BrokerOrder, step: BookFill, *, actor: str
) -> bool:
    """Book the planned increment once (False: this cumulative fill was booked before)."""
    increment = step.increment
    assert order.ticker is not None and order.side is not None and order.strategy_id is not None
    inserted = session.connection().scalar(  # no autoflush: the fill depends on nothing pending
        _INSERT_FILL,
        {
            "order_id": order.id,
            "fill_key": f"{report.brokerage_order_id}:{report.filled_quantity.normalize()}",
            "quantity": increment.quantity,
            "price": increment.price,
            "filled_at": report.updated_at or datetime.now(UTC),
        },
    )
    if inserted is None:
        return False
    first_fill = order.filled_quantity == 0
    OrderManager(session).update(
        order, filled_quantity=step.filled_quantity, avg_fill_price=step.avg_fill_price
    )
    lock_ticker(session, order.ticker)
    position = book_fill(
        session,
        strategy_id=order.strategy_id,
        strategy_name=order.strategy_name,
        ticker=order.ticker,
        side=Side(order.side),
        quantity=increment.quantity,
        price=increment.price,
        order_id=order.id,
    )
    if order.protective and first_fill:
        _stop_loss_triggered(session, order, increment.quantity, increment.price, actor=actor)
    if position.quantity == 0:
        release_if_unused(
            session, order.ticker, order.strategy_id, reason="position closed", exclude=order.id
        )
    return True


def release_unfilled_claim(session: Session, order: Order) -> None:
    """A buy that ended with nothing filled gives back the claim it made."""
    if order.filled_quantity or order.ticker is None or order.strategy_id is None:
        return
    lock_ticker(session, order.ticker)
    release_if_unused(
        session,
        order.ticker,
        order.strategy_id,
        reason=f"order {order.client_order_id} ended {order.state} with nothing filled",
    )
