"""Booking trade updates (service_layer/trade_updates.py) on Postgres, and the consumers' Redis
lease (tasks/stream.py) on Redis."""

from __future__ import annotations

import time
from decimal import Decimal

import redis
from sqlalchemy import func, select

from core.brokerage import BrokerOrder, Side
from core.signals import Signal
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.models import Fill, Order, Strategy
from db.order_manager import OrderManager
from service_layer.trade_updates import ACTOR, book
from tasks.stream import Lease

S = OrderState


def _pending_order(db: Database, quantity: int = 10) -> str:
    signal = Signal.parse({"strategy": "trading", "signal_id": "tu-1", "ticker": "AAPL",
                           "side": "buy", "quantity": quantity})
    with db.unit_of_work() as uow:
        strategy = uow.session.scalar(select(Strategy).where(Strategy.name == "trading"))
        manager = OrderManager(uow.session)
        order, _ = manager.create_from_signal(signal, strategy, actor="test")
        manager.transition(order, S.VALIDATING, reason="test", actor="test",
                           cause=TransitionCause.VALIDATION)
        manager.transition(order, S.ORDER_PENDING, reason="test", actor="test",
                           cause=TransitionCause.CONFLICT_CHECK)
        uow.commit()
        return order.client_order_id


def _report(coid: str, status: str, filled: str, avg: str | None) -> BrokerOrder:
    return BrokerOrder("b-tu-1", coid, "AAPL", Side.BUY, Decimal(10), status, Decimal(filled),
                       None if avg is None else Decimal(avg))


def test_updates_are_settled_and_a_repeated_fill_is_booked_once(db: Database) -> None:
    coid = _pending_order(db)
    assert book(db, _report(coid, "new", "0", None)) is None  # submit's news, not the stream's
    partial = book(db, _report(coid, "partially_filled", "4", "100.5"))
    assert partial is not None and partial.filled and partial.state == "PARTIAL_FILLED"
    assert partial.transitions == ("ORDER_SENT", "PARTIAL_FILLED")
    filled = _report(coid, "filled", "10", "101")
    done = book(db, filled)
    assert done is not None and done.filled and done.state == "FULLY_FILLED"
    assert book(db, filled) is None  # polling or a repeat saw it already: nothing new
    with db.unit_of_work() as uow:
        order = uow.session.scalar(select(Order).where(Order.client_order_id == coid))
        assert order is not None and order.filled_quantity == 10
        assert order.avg_fill_price == Decimal("101")
        fills = uow.session.scalar(select(func.count(Fill.id)).where(Fill.order_id == order.id))
        assert fills == 2


def test_an_update_for_an_order_arbiter_does_not_hold_changes_nothing(db: Database) -> None:
    assert book(db, _report("arb-not-ours", "filled", "10", "100"), actor=ACTOR) is None


def test_a_cancel_with_nothing_filled_is_booked(db: Database) -> None:
    coid = _pending_order(db)
    cancelled = book(db, _report(coid, "canceled", "0", None))
    assert cancelled is not None and cancelled.state == "CANCELLED"


def test_a_status_arbiter_does_not_know_is_left_to_reconciliation(db: Database) -> None:
    coid = _pending_order(db)
    assert book(db, _report(coid, "teleported", "0", None)) is None


def test_one_lease_holder_at_a_time_and_a_dead_holders_lease_expires(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first = Lease(client, "arbiter:trade-stream:test", ttl_s=0.3)
    second = Lease(client, "arbiter:trade-stream:test", ttl_s=0.3)
    assert first.hold()
    assert not second.hold()
    assert first.hold()  # renewing is holding
    assert first.holder() == first.token
    deadline = time.monotonic() + 5  # the first dies without releasing: its lease expires
    while not second.hold():
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.05)
    assert not first.hold()
    second.release()
    assert first.hold()
