"""Positions per (strategy, ticker), changed only by applying fills (and ownership transfers)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from core.brokerage import Side
from core.event_payloads import PositionChanged
from core.events import Event, EventType
from core.positions import PositionState, apply_fill
from db.models import Position
from db.outbox import emit


def get_or_create_position(session: Session, strategy_id: int, ticker: str) -> Position:
    """The row, locked for update; created empty the first time. One round trip: an upsert
    whose no-op update takes the row lock and returns the row."""
    stmt = insert(Position).values(strategy_id=strategy_id, ticker=ticker)
    with session.no_autoflush:  # a position depends on nothing pending in the session
        position: Position | None = session.scalar(
            stmt.on_conflict_do_update(
                index_elements=["strategy_id", "ticker"], set_={"ticker": stmt.excluded.ticker}
            ).returning(Position),
            execution_options={"populate_existing": True},
        )
    assert position is not None
    return position


# On the connection, with the loaded row brought in line: the ORM's unit of work would cost
# more than the UPDATE (a fill's hot path).
_UPDATE = text(
    "UPDATE positions SET quantity = :quantity, avg_cost = :avg_cost,"
    " realized_pnl = :realized_pnl WHERE id = :id"
).bindparams(
    bindparam("quantity", type_=Position.__table__.c.quantity.type),
    bindparam("avg_cost", type_=Position.__table__.c.avg_cost.type),
    bindparam("realized_pnl", type_=Position.__table__.c.realized_pnl.type),
)


def _store(session: Session, position: Position, state: PositionState) -> None:
    values = {
        "quantity": state.quantity,
        "avg_cost": state.avg_cost,
        "realized_pnl": state.realized_pnl,
    }
    session.connection().execute(_UPDATE, {"id": position.id, **values})
    for name, value in values.items():
        set_committed_value(position, name, value)


def strategy_quantity(session: Session, strategy_id: int, ticker: str) -> Decimal:
    quantity = session.scalar(
        select(Position.quantity).where(
            Position.strategy_id == strategy_id, Position.ticker == ticker
        )
    )
    return quantity or Decimal(0)


def book_fill(
    session: Session,
    *,
    strategy_id: int,
    strategy_name: str,
    ticker: str,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    order_id: int,
) -> Position:
    """Apply one fill to the strategy's position and emit POSITION_OPENED/UPDATED/CLOSED."""
    position = get_or_create_position(session, strategy_id, ticker)
    before = position.quantity
    after = apply_fill(
        PositionState(position.quantity, position.avg_cost, position.realized_pnl),
        side,
        quantity,
        price,
    )
    _store(session, position, after)
    if before == 0 and after.quantity != 0:
        event_type = EventType.POSITION_OPENED
    elif after.quantity == 0:
        event_type = EventType.POSITION_CLOSED
    else:
        event_type = EventType.POSITION_UPDATED
    emit(
        session,
        Event.of(
            event_type,
            PositionChanged(
                side=side,
                fill_quantity=quantity,
                fill_price=price,
                quantity=after.quantity,
                avg_cost=after.avg_cost,
                realized_pnl=after.realized_pnl,
            ),
            order_id=order_id,
            strategy=strategy_name,
            ticker=ticker,
        ),
    )
    return position
