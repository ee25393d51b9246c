"""A human's decisions on the review queue that change the books, each audited:

- correct a final order to the brokerage's final word (a fill found after CANCELLED): an
  audit row and ORDER_CORRECTED (core.states.CORRECTIONS says which corrections exist);
- resolve a position mismatch by adopting the brokerage's quantity: the difference is booked
  to the ticker's owner (or a named strategy), with POSITION_ADJUSTED; a position that ends
  flat releases the ownership, one that appears without an owner is claimed for its holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.event_payloads import PositionAdjusted
from core.events import Event, EventType
from core.states import OrderState
from db.clock import db_now
from db.models import Order, Position, ReviewItem, Strategy
from db.order_manager import OrderManager
from db.outbox import emit
from db.ownership import claim, current_owner, lock_ticker, release_if_unused
from db.positions import get_or_create_position
from db.strategies import require_strategy


@dataclass(frozen=True)
class Adjustment:
    ticker: str
    strategy: str
    before: Decimal
    after: Decimal


def correct_order(
    session: Session, item: ReviewItem, target: OrderState, note: str, actor: str
) -> Order:
    if item.order_id is None:
        raise InvalidInput(f"review item {item.id} has no order to correct")
    manager = OrderManager(session)
    order = manager.lock(item.order_id)
    if target is OrderState.FULLY_FILLED and order.filled_quantity != order.quantity:
        raise InvalidInput(
            f"order {order.id} has {order.filled_quantity} of {order.quantity} filled: "
            "it cannot be corrected to FULLY_FILLED"
        )
    manager.correct(order, target, reason=note, actor=actor)
    return manager.resolve_review(order, note=note, actor=actor)


def adopt_brokerage_position(
    session: Session,
    item: ReviewItem,
    *,
    brokerage_quantity: Decimal,
    brokerage_avg_price: Decimal | None,
    strategy: str | None,
    note: str,
    actor: str,
) -> Adjustment:
    """Make the strategies' total in the item's ticker equal the brokerage's quantity."""
    if item.kind != "position" or item.ticker is None:
        raise InvalidInput(f"review item {item.id} is not a position mismatch")
    ticker = item.ticker
    lock_ticker(session, ticker)
    holder = _holder(session, ticker, strategy)
    ours = sum(
        session.scalars(select(Position.quantity).where(Position.ticker == ticker)), Decimal(0)
    )
    difference = brokerage_quantity - ours
    position = get_or_create_position(session, holder.id, ticker)
    before = position.quantity
    after = before + difference
    if after < 0:
        raise InvalidInput(
            f"adopting {brokerage_quantity} would leave {holder.name} at {after} {ticker}: "
            "name the strategy that holds the difference with --strategy"
        )
    if after == 0:
        position.avg_cost = Decimal(0)
    elif before == 0 and brokerage_avg_price is not None:
        position.avg_cost = brokerage_avg_price
    position.quantity = after
    session.flush()
    emit(
        session,
        Event.of(
            EventType.POSITION_ADJUSTED,
            PositionAdjusted(
                reason=f"adopted the brokerage's quantity: {note}",
                actor=actor,
                review_item_id=item.id,
                before=before,
                after=after,
                brokerage_quantity=brokerage_quantity,
                avg_cost=position.avg_cost,
            ),
            strategy=holder.name,
            ticker=ticker,
        ),
    )
    owner = current_owner(session, ticker)
    if after == 0:
        release_if_unused(session, ticker, holder.id, reason="position adjusted to flat")
    elif owner is None:
        claim(session, ticker, holder, None, reason=f"holds {after} {ticker} after adjustment")
    item.resolved_at = db_now(session)
    item.resolution_note = note
    session.flush()
    return Adjustment(ticker, holder.name, before, after)


def _holder(session: Session, ticker: str, strategy: str | None) -> Strategy:
    """Who the difference is booked to: the named strategy, else the ticker's owner."""
    owner = current_owner(session, ticker)
    if strategy is not None:
        named = require_strategy(session, strategy)
        if owner is not None and owner.strategy_id != named.id:
            raise InvalidInput(
                f"{ticker} is owned by {owner.strategy.name}: book the difference to it "
                "(or transfer the ticker first)"
            )
        return named
    if owner is None:
        raise InvalidInput(f"{ticker} has no owner: name the strategy with --strategy")
    return owner.strategy
