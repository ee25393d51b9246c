"""Ticker ownership in Postgres: the per-ticker lock, claims, transfers and releases.

Check-and-claim for one ticker is serialised across every worker on every machine by a
transaction-scoped advisory lock; the partial unique index on live primary owners is the
database's last word should any code path forget it.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from core.event_payloads import (
    EventPayload,
    OwnershipAcquired,
    OwnershipReleased,
    OwnershipTransferred,
)
from core.events import Event, EventType
from core.positions import PositionState, merge
from core.states import TERMINAL_STATES
from core.strategies import lock_until
from db.clock import db_now
from db.models import Order, Position, Strategy, TickerOwnership
from db.outbox import emit
from db.positions import get_or_create_position

_TICKER_LOCK_NAMESPACE = 0x4152  # "AR": keeps our advisory locks apart from anyone else's


def lock_ticker(session: Session, ticker: str) -> None:
    """Hold the ticker's lock until the transaction ends (on the connection: nothing pending
    in the session needs flushing for it)."""
    session.connection().execute(
        text("SELECT pg_advisory_xact_lock(:ns, hashtext(:ticker))"),
        {"ns": _TICKER_LOCK_NAMESPACE, "ticker": ticker},
    )


_CURRENT_OWNER = select(TickerOwnership).where(  # built once: the conflict check's hot path
    TickerOwnership.ticker == bindparam("ticker"), TickerOwnership.released_at.is_(None)
)


def current_owner(session: Session, ticker: str) -> TickerOwnership | None:
    return session.scalar(_CURRENT_OWNER, {"ticker": ticker})


def _ownership_event(
    event_type: EventType, row: TickerOwnership, strategy: str, payload: EventPayload
) -> Event:
    return Event.of(
        event_type, payload, strategy=strategy, ticker=row.ticker, order_id=row.acquired_by_order_id
    )


def claim(
    session: Session, ticker: str, strategy: Strategy, order_id: int | None, reason: str
) -> TickerOwnership:
    now = db_now(session)
    row: TickerOwnership | None = session.scalar(  # one INSERT, no unit of work: the hot path
        insert(TickerOwnership)
        .values(
            ticker=ticker,
            strategy_id=strategy.id,
            locked_until=lock_until(strategy.config, now),
            acquired_by_order_id=order_id,
        )
        .returning(TickerOwnership)
    )
    assert row is not None
    set_committed_value(row, "strategy", strategy)
    acquired = OwnershipAcquired(
        ticker=ticker,
        strategy_id=strategy.id,
        strategy_name=strategy.name,
        reasoning=reason,
        ownership_id=row.id,
        locked_until=row.locked_until,
    )
    emit(session, _ownership_event(EventType.OWNERSHIP_ACQUIRED, row, strategy.name, acquired))
    return row


def release(session: Session, row: TickerOwnership, reason: str) -> None:
    row.released_at = func.clock_timestamp()
    row.release_reason = reason
    session.flush()
    emit(
        session,
        _ownership_event(
            EventType.OWNERSHIP_RELEASED,
            row,
            row.strategy.name,
            OwnershipReleased(
                ticker=row.ticker,
                strategy_id=row.strategy_id,
                strategy_name=row.strategy.name,
                reason=reason,
                ownership_id=row.id,
            ),
        ),
    )


def transfer(
    session: Session, row: TickerOwnership, to: Strategy, order_id: int | None, reason: str
) -> TickerOwnership:
    """Move ownership and the previous owner's position (quantity and average cost) to `to`."""
    previous = row.strategy
    row.released_at = func.clock_timestamp()
    row.release_reason = f"transferred to {to.name}"
    session.flush()
    now = db_now(session)
    new_row = TickerOwnership(
        ticker=row.ticker,
        strategy_id=to.id,
        strategy=to,
        locked_until=lock_until(to.config, now),
        acquired_by_order_id=order_id,
    )
    session.add(new_row)
    session.flush()
    moved = _move_position(session, row.ticker, previous.id, to.id)
    emit(
        session,
        _ownership_event(
            EventType.OWNERSHIP_TRANSFERRED,
            new_row,
            to.name,
            OwnershipTransferred(
                ticker=row.ticker,
                from_strategy_id=previous.id,
                from_strategy_name=previous.name,
                to_strategy_id=to.id,
                to_strategy_name=to.name,
                reason=reason,
                ownership_id=new_row.id,
                locked_until=new_row.locked_until,
                position_moved=moved.quantity,
                avg_cost=moved.avg_cost,
            ),
        ),
    )
    return new_row


def _move_position(session: Session, ticker: str, from_id: int, to_id: int) -> PositionState:
    """Re-attribute the previous owner's position in `ticker` to the new owner; returns what
    moved (quantity and average cost)."""
    source = session.scalar(
        select(Position)
        .where(Position.strategy_id == from_id, Position.ticker == ticker)
        .with_for_update(of=Position)
    )
    if source is None or source.quantity == 0:
        return PositionState(Decimal(0), Decimal(0))
    target = get_or_create_position(session, to_id, ticker)
    merged = merge(
        PositionState(target.quantity, target.avg_cost, target.realized_pnl),
        PositionState(source.quantity, source.avg_cost),
    )
    moved = PositionState(source.quantity, source.avg_cost)
    target.quantity, target.avg_cost = merged.quantity, merged.avg_cost
    source.quantity, source.avg_cost = Decimal(0), Decimal(0)
    session.flush()
    return moved


def release_if_unused(
    session: Session, ticker: str, strategy_id: int, reason: str, exclude: int | None = None
) -> bool:
    """Release `strategy_id`'s claim on `ticker` when it holds no position there and has no
    live order in it (other than `exclude`). Call with the ticker lock held."""
    row = current_owner(session, ticker)
    if row is None or row.strategy_id != strategy_id:
        return False
    held = session.scalar(
        select(Position.quantity).where(
            Position.strategy_id == strategy_id, Position.ticker == ticker
        )
    )
    if held:
        return False
    live_orders = session.scalar(
        select(func.count())
        .select_from(Order)
        .where(
            Order.strategy_id == strategy_id,
            Order.ticker == ticker,
            Order.state.notin_([s.value for s in TERMINAL_STATES]),
            Order.id != (exclude or 0),
        )
    )
    if live_orders:
        return False
    release(session, row, reason)
    return True


def release_for_strategy(
    session: Session, strategy: Strategy, reason: str
) -> tuple[list[str], list[str]]:
    """Deactivation: release `strategy`'s ownership locks. Where it holds no position its
    ownership ends too; where it holds shares it keeps ownership (unlocked), so no position is
    left without an owner; the next active strategy to trade the ticker takes both over.
    Returns (tickers released, tickers kept unlocked)."""
    rows = list(
        session.scalars(
            select(TickerOwnership).where(
                TickerOwnership.strategy_id == strategy.id,
                TickerOwnership.released_at.is_(None),
            )
        )
    )
    released, kept = [], []
    for row in rows:
        lock_ticker(session, row.ticker)
        if held_quantity(session, strategy.id, row.ticker):
            unlock(session, row, reason)
            kept.append(row.ticker)
        else:
            release(session, row, reason)
            released.append(row.ticker)
    return released, kept


def held_quantity(session: Session, strategy_id: int, ticker: str) -> Decimal:
    quantity = session.scalar(
        select(Position.quantity).where(
            Position.strategy_id == strategy_id, Position.ticker == ticker
        )
    )
    return quantity or Decimal(0)


def unlock(session: Session, row: TickerOwnership, reason: str) -> bool:
    """End the ownership lock now (the ownership stays). False when it was not locked."""
    now = db_now(session)
    if row.locked_until is None or row.locked_until <= now:
        return False
    row.locked_until = now
    session.flush()
    return True
