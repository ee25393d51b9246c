"""Reads and small writes that the pipeline and the CLI share: strategies, the kill switch,
and the counts that pre-trade risk needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.events import Event, EventType
from core.signals import STRATEGY_PATTERN
from core.states import TERMINAL_STATES, OrderState
from core.strategies import Horizon
from db.models import Order, Strategy, SystemFlag
from db.outbox import emit
from db.ownership import release_for_strategy

KILL_SWITCH = "kill_switch"
_TERMINAL = [s.value for s in TERMINAL_STATES]


# -- strategies ----------------------------------------------------------------------------


def strategy_by_name(session: Session, name: str) -> Strategy | None:
    return session.scalar(select(Strategy).where(Strategy.name == name))


def require_strategy(session: Session, name: str) -> Strategy:
    strategy = strategy_by_name(session, name)
    if strategy is None:
        raise InvalidInput(f"unknown strategy {name!r}")
    return strategy


def list_strategies(session: Session) -> list[Strategy]:
    return list(session.scalars(select(Strategy).order_by(Strategy.priority.desc(), Strategy.name)))


def add_strategy(
    session: Session,
    name: str,
    priority: int,
    horizon: str,
    display_name: str | None = None,
    config: dict[str, Any] | None = None,
) -> Strategy:
    if not STRATEGY_PATTERN.match(name):
        raise InvalidInput(f"strategy name {name!r}: use lowercase letters, digits and _")
    if horizon not in {h.value for h in Horizon}:
        raise InvalidInput(f"horizon {horizon!r}: use short, medium or long")
    if strategy_by_name(session, name) is not None:
        raise InvalidInput(f"strategy {name!r} already exists")
    strategy = Strategy(
        name=name,
        display_name=display_name or name.replace("_", " ").title(),
        priority=priority,
        horizon=horizon,
        config=config or {},
    )
    session.add(strategy)
    session.flush()
    return strategy


def set_active(session: Session, name: str, active: bool, reason: str) -> Strategy:
    """(De)activate; deactivating releases the strategy's ownership locks."""
    strategy = require_strategy(session, name)
    if strategy.active == active:
        return strategy
    strategy.active = active
    released = [] if active else release_for_strategy(session, strategy, f"{name} deactivated")
    emit(
        session,
        Event(
            type=EventType.STRATEGY_ACTIVATED if active else EventType.STRATEGY_DEACTIVATED,
            strategy=name,
            payload={"reason": reason, "released_tickers": released},
        ),
    )
    session.flush()
    return strategy


# -- kill switch -----------------------------------------------------------------------------


def kill_switch(session: Session) -> dict[str, Any]:
    flag = session.get(SystemFlag, KILL_SWITCH)
    return flag.value if flag is not None else {"on": False}


def kill_switch_on(session: Session) -> bool:
    return bool(kill_switch(session).get("on"))


def set_kill_switch(session: Session, on: bool, reason: str, actor: str) -> None:
    value = {"on": on, "reason": reason, "by": actor, "at": datetime.now(UTC).isoformat()}
    session.execute(
        insert(SystemFlag)
        .values(key=KILL_SWITCH, value=value)
        .on_conflict_do_update(index_elements=["key"], set_={"value": value})
    )
    emit(
        session,
        Event(
            type=EventType.KILL_SWITCH_ACTIVATED if on else EventType.KILL_SWITCH_DEACTIVATED,
            source=actor,
            payload={"reason": reason},
        ),
    )


# -- what pre-trade risk needs ---------------------------------------------------------------


@dataclass(frozen=True)
class RiskSnapshot:
    kill_switch_on: bool
    open_orders: int
    signals_last_minute: int
    last_price: Decimal | None


_OPEN_STATES = [
    OrderState.SIGNAL_RECEIVED.value,
    OrderState.VALIDATING.value,
    OrderState.ORDER_PENDING.value,
    OrderState.ORDER_SENT.value,
    OrderState.PARTIAL_FILLED.value,
]


def risk_snapshot(session: Session, order: Order) -> RiskSnapshot:
    """Everything pre-trade risk reads about the world, in one round trip."""
    others = Order.id != order.id
    kill = (
        select(SystemFlag.value["on"].as_boolean())
        .where(SystemFlag.key == KILL_SWITCH)
        .scalar_subquery()
    )
    open_orders = (
        select(func.count())
        .select_from(Order)
        .where(Order.strategy_id == order.strategy_id, Order.state.in_(_OPEN_STATES), others)
        .scalar_subquery()
    )
    recent = (
        select(func.count())
        .select_from(Order)
        .where(
            Order.strategy_name == order.strategy_name,
            Order.created_at >= func.now() - timedelta(minutes=1),
            others,
        )
        .scalar_subquery()
    )
    last_price = (
        select(Order.avg_fill_price)
        .where(Order.ticker == order.ticker, Order.avg_fill_price.isnot(None))
        .order_by(Order.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    row = session.execute(select(kill, open_orders, recent, last_price)).one()
    return RiskSnapshot(bool(row[0]), row[1] or 0, row[2] or 0, row[3])


def live_order_count(session: Session, strategy_id: int, ticker: str) -> int:
    """The strategy's orders in `ticker` that may still trade (validated, not terminal)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Order)
            .where(
                Order.strategy_id == strategy_id,
                Order.ticker == ticker,
                Order.state.in_(
                    [
                        OrderState.ORDER_PENDING.value,
                        OrderState.ORDER_SENT.value,
                        OrderState.PARTIAL_FILLED.value,
                    ]
                ),
            )
        )
        or 0
    )


def open_sell_quantity(session: Session, strategy_id: int, ticker: str, exclude: int) -> Decimal:
    """Shares already promised by the strategy's live sells in `ticker` (still unfilled)."""
    total = session.scalar(
        select(func.coalesce(func.sum(Order.quantity - Order.filled_quantity), 0)).where(
            Order.strategy_id == strategy_id,
            Order.ticker == ticker,
            Order.side == "sell",
            Order.state.in_(
                [
                    OrderState.ORDER_PENDING.value,
                    OrderState.ORDER_SENT.value,
                    OrderState.PARTIAL_FILLED.value,
                ]
            ),
            Order.id != exclude,
        )
    )
    return Decimal(total or 0)
