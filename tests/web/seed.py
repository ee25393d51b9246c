"""Rows for API tests, written the way the pipeline writes them (OrderManager, outbox)."""

from __future__ import annotations

from decimal import Decimal

from core.signals import Signal
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.models import ConflictLog, Order
from db.order_manager import OrderManager
from db.strategies import require_strategy


def order(
    db: Database,
    strategy: str,
    signal_id: str,
    ticker: str = "AAPL",
    side: str = "buy",
    quantity: str = "10",
    state: OrderState | None = None,
) -> int:
    with db.unit_of_work() as uow:
        signal = Signal.parse({"strategy": strategy, "signal_id": signal_id, "ticker": ticker,
                               "side": side, "quantity": quantity})  # fmt: skip
        manager = OrderManager(uow.session)
        row, _ = manager.create_from_signal(
            signal, require_strategy(uow.session, strategy), actor="test"
        )
        if state is OrderState.REJECTED:
            manager.transition(
                row,
                OrderState.REJECTED,
                reason="test rejection",
                actor="test",
                cause=TransitionCause.SIGNAL_INTAKE,
            )
        uow.commit()
        return row.id


def conflict(db: Database, order_id: int, ticker: str, requesting: str, owning: str,
             resolution: str, reasoning: str) -> int:  # fmt: skip
    with db.unit_of_work() as uow:
        req = require_strategy(uow.session, requesting)
        own = require_strategy(uow.session, owning)
        row = ConflictLog(order_id=order_id, ticker=ticker, requesting_strategy_id=req.id,
                          owning_strategy_id=own.id, requesting_priority=req.priority,
                          owning_priority=own.priority, action="sell", resolution=resolution,
                          reasoning=reasoning)  # fmt: skip
        uow.session.add(row)
        uow.commit()
        return row.id


def flag(db: Database, order_id: int, reason: str) -> None:
    with db.unit_of_work() as uow:
        OrderManager(uow.session).flag_for_review(order_id, reason, actor="test")
        uow.commit()


def quantity_of(db: Database, order_id: int) -> Decimal | None:
    with db.sessions() as session:
        row = session.get(Order, order_id)
        return row.quantity if row else None
