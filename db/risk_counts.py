"""The counts pre-trade risk and the conflict check read: open orders, recent signals, live
orders and promised sells per strategy and ticker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session

from core.states import OPEN_AT_BROKERAGE, TERMINAL_STATES, OrderState
from db.kill_switch import KILL_SWITCH
from db.models import Order, SystemFlag

S = OrderState


@dataclass(frozen=True)
class RiskSnapshot:
    kill_switch_on: bool
    open_orders: int
    signals_last_minute: int


_OPEN_STATES = [s.value for s in OrderState if s not in TERMINAL_STATES and s is not S.IDLE]
_LIVE_STATES = [s.value for s in OPEN_AT_BROKERAGE]


def _snapshot_statement() -> Select[Any]:
    others = Order.id != bindparam("order_id")
    kill = (
        select(SystemFlag.value["on"].as_boolean())
        .where(SystemFlag.key == KILL_SWITCH)
        .scalar_subquery()
    )
    open_orders = (
        select(func.count())
        .select_from(Order)
        .where(
            Order.strategy_id == bindparam("strategy_id"),
            Order.state.in_(_OPEN_STATES),
            others,
        )
        .scalar_subquery()
    )
    recent = (
        select(func.count())
        .select_from(Order)
        .where(
            Order.strategy_name == bindparam("strategy_name"),
            Order.created_at >= func.now() - timedelta(minutes=1),
            others,
        )
        .scalar_subquery()
    )
    return select(kill, open_orders, recent)


# Built once: on the hot path, constructing the statement cost more than running it.
_SNAPSHOT = _snapshot_statement()


def risk_snapshot(session: Session, order: Order) -> RiskSnapshot:
    """Everything pre-trade risk reads about the world, in one round trip."""
    row = session.execute(
        _SNAPSHOT,
        {
            "order_id": order.id,
            "strategy_id": order.strategy_id,
            "strategy_name": order.strategy_name,
        },
    ).one()
    return RiskSnapshot(bool(row[0]), row[1] or 0, row[2] or 0)


def live_order_count(session: Session, strategy_id: int, ticker: str) -> int:
    """The strategy's orders in `ticker` that may still trade (validated, not terminal)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Order)
            .where(
                Order.strategy_id == strategy_id,
                Order.ticker == ticker,
                Order.state.in_(_LIVE_STATES),
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
            Order.state.in_(_LIVE_STATES),
            Order.id != exclude,
        )
    )
    return Decimal(total or 0)
