"""Settling an order against what the brokerage reports: the one place where brokerage
truth (status, cumulative fills) turns into transitions, fills and positions.

Submit, reconciliation and retries all come through here, so a fill is applied exactly once
whichever of them sees it first: the order row is locked, and only the increment over the
filled quantity already recorded is booked (keyed by brokerage order and cumulative quantity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.brokerage import BrokerOrder, Side
from core.positions import fill_increment
from core.states import OrderState, can_transition, is_terminal
from db.models import Fill, Order
from db.order_manager import OrderManager
from db.ownership import lock_ticker, release_if_unused
from db.positions import book_fill

S = OrderState


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

    current = OrderState(order.state)
    target = report.state

    # From ORDER_PENDING the brokerage's acceptance comes first.
    if current is S.ORDER_PENDING and target in (S.ORDER_SENT, S.PARTIAL_FILLED, S.FULLY_FILLED):
        manager.transition(order, S.ORDER_SENT, reason="accepted by the brokerage", actor=actor)
        result.transitions.append(S.ORDER_SENT.value)
        current = S.ORDER_SENT

    if _book_new_fills(session, order, report, actor=actor):
        result.filled = True

    if is_terminal(current):
        # A new fill, or a different final word, on an order we hold as final is an anomaly;
        # an older, non-final snapshot arriving late (submit's POST answer after
        # reconciliation settled the order) is not.
        contradicts = is_terminal(target) and target is not current and target is not S.CANCELLED
        if result.filled or contradicts:
            # e.g. a fill that raced our cancel: applied above, and a human should look.
            reason = (
                f"brokerage reports {report.status} (filled {report.filled_quantity}) for an "
                f"order Arbiter holds as {current.value}"
            )
            manager.flag_for_review(order, reason, actor=actor)
            result.flagged = reason
        return result

    if target is S.PARTIAL_FILLED and current is S.PARTIAL_FILLED and not result.filled:
        return result  # nothing new
    if target is not current or target is S.PARTIAL_FILLED:
        if can_transition(current, target):
            said = report.reject_reason if target is S.REJECTED else None
            manager.transition(
                order, target, reason=said or f"brokerage: {report.status}", actor=actor
            )
            result.transitions.append(target.value)
        elif target is not S.ORDER_SENT:
            odd = f"brokerage status {report.status} cannot follow {current.value}"
            manager.flag_for_review(order, odd, actor=actor)
            result.flagged = odd

    if is_terminal(OrderState(order.state)) and order.side == Side.BUY.value:
        release_unfilled_claim(session, order)
    return result


def _book_new_fills(session: Session, order: Order, report: BrokerOrder, *, actor: str) -> bool:
    increment = fill_increment(
        order.filled_quantity, order.avg_fill_price, report.filled_quantity, report.avg_fill_price
    )
    if increment is None:
        return False
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
        order, filled_quantity=report.filled_quantity, avg_fill_price=report.avg_fill_price
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
