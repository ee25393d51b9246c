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

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.brokerage import BrokerOrder, Side
from core.settlement import BookFill, Move, Review, plan_settlement
from core.states import OrderState, TransitionCause, is_terminal
from db.models import Fill, Order
from db.order_manager import OrderManager
from db.ownership import lock_ticker, release_if_unused
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
    for step in plan.steps:
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
            result.filled = _book_fill(session, order, report, step)
        elif isinstance(step, Review):
            manager.flag_for_review(order, step.reason, actor=actor)
            result.flagged = step.reason
    if is_terminal(OrderState(order.state)) and order.side == Side.BUY.value:
        release_unfilled_claim(session, order)
    return result


def _book_fill(session: Session, order: Order, report: BrokerOrder, step: BookFill) -> bool:
    """Book the planned increment once (False: this cumulative fill was booked before)."""
    increment = step.increment
    assert order.ticker is not None and order.side is not None and order.strategy_id is not None
    inserted = session.scalar(
        insert(Fill)
        .values(
            order_id=order.id,
            fill_key=f"{report.brokerage_order_id}:{report.filled_quantity.normalize()}",
            quantity=increment.quantity,
            price=increment.price,
            filled_at=report.updated_at or datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["fill_key"])
        .returning(Fill.id)
    )
    if inserted is None:
        return False
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
