"""service_layer/settlement.settle on Postgres under hypothesis-generated brokerage reports
for one order: fills sliced, reports duplicated and reordered, the rest cancelled, Arbiter's own
cancel racing a fill. Fills are booked exactly once, the audit trail is a valid path, and the
filled quantity is the largest one reported. The pure twin: tests/unit/test_state_properties.py,
which drives the same plan (core/settlement.py) without a database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from core.brokerage import BrokerOrder, Side
from core.events import EventType
from core.signals import Signal
from core.states import OrderState, TransitionCause, is_valid_path
from db.engine import Database
from db.models import EventRecord, Fill, Order, OrderTransition, Position, Strategy
from db.order_manager import OrderManager
from service_layer.settlement import settle
from tests.fixtures.database import reset_database

S = OrderState
QUANTITY = 40
ACTOR = "test.settlement"


@st.composite
def timelines(draw: st.DrawFn) -> tuple[list[BrokerOrder], list[int], int | None]:
    """(snapshots the brokerage reported, the order they are delivered in, index of the
    delivery before which Arbiter cancels on its own side, or None)."""
    slices = draw(st.lists(st.integers(1, QUANTITY), min_size=0, max_size=4))
    prices = st.decimals(Decimal("1"), Decimal("300"), places=2)
    filled, cost = Decimal(0), Decimal(0)
    snapshots = [_report("new", filled, None)]
    for size in slices:
        if filled == QUANTITY:
            break
        quantity = min(Decimal(size), QUANTITY - filled)
        filled += quantity
        cost += quantity * draw(prices)
        avg = (cost / filled).quantize(Decimal("0.000000001"))
        snapshots.append(_report("filled" if filled == QUANTITY else "partially_filled",
                                 filled, avg))
    if filled < QUANTITY and draw(st.booleans()):
        last = snapshots[-1]
        snapshots.append(_report("canceled", last.filled_quantity, last.avg_fill_price))
    order = draw(st.lists(st.integers(0, len(snapshots) - 1), min_size=1, max_size=10))
    order.append(len(snapshots) - 1)  # the latest word arrives at least once, possibly last
    cancel_at = draw(st.none() | st.integers(0, len(order)))
    return snapshots, order, cancel_at


def _report(status: str, filled: Decimal, avg: Decimal | None) -> BrokerOrder:
    return BrokerOrder("b-prop-1", "arb-prop-1", "AAPL", Side.BUY, Decimal(QUANTITY), status,
                       filled, avg)


def _pending_order(database: Database) -> int:
    signal = Signal.parse({"strategy": "trading", "signal_id": "prop-1", "ticker": "AAPL",
                           "side": "buy", "quantity": QUANTITY})
    with database.unit_of_work() as uow:
        strategy = uow.session.scalar(select(Strategy).where(Strategy.name == "trading"))
        manager = OrderManager(uow.session)
        order, _ = manager.create_from_signal(signal, strategy, actor=ACTOR)
        manager.transition(order, S.VALIDATING, reason="test", actor=ACTOR,
            cause=TransitionCause.OPERATOR)
        manager.transition(order, S.ORDER_PENDING, reason="test", actor=ACTOR,
            cause=TransitionCause.OPERATOR)
        uow.commit()
        return order.id


@pytest.fixture
def database(_session_db: Database) -> Database:
    return _session_db


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timeline=timelines())
def test_any_order_of_reports_books_each_fill_once_on_a_valid_path(
    database: Database, timeline: tuple[list[BrokerOrder], list[int], int | None]
) -> None:
    snapshots, deliveries, cancel_at = timeline
    reset_database(database)
    order_id = _pending_order(database)
    cancelled_with = None
    for step, index in enumerate(deliveries):
        with database.unit_of_work() as uow:
            manager = OrderManager(uow.session)
            order = manager.lock(order_id)
            if step == cancel_at and order.state in ("ORDER_PENDING", "ORDER_SENT",
                                                     "PARTIAL_FILLED"):
                manager.transition(order, S.CANCELLED, reason="kill switch", actor=ACTOR,
                    cause=TransitionCause.KILL_SWITCH)
                cancelled_with = order.filled_quantity
            settle(uow.session, order, snapshots[index], actor=ACTOR)
            uow.commit()

    delivered_max = max(snapshots[i].filled_quantity for i in deliveries)
    with database.unit_of_work() as uow:
        s = uow.session
        found = s.get(Order, order_id)
        assert found is not None
        order = found
        fills = list(s.scalars(select(Fill).where(Fill.order_id == order_id)))
        trail = list(s.scalars(select(OrderTransition).where(OrderTransition.order_id == order_id)
                               .order_by(OrderTransition.id)))
        position = s.scalar(select(Position.quantity).where(Position.ticker == "AAPL"))
        filled_events = len(list(s.scalars(select(EventRecord.seq).where(
            EventRecord.order_id == order_id,
            EventRecord.type.in_([EventType.ORDER_FILLED.value,
                                  EventType.ORDER_PARTIALLY_FILLED.value])))))
    # Fills booked exactly once, nothing dropped.
    assert order.filled_quantity == delivered_max
    assert sum((f.quantity for f in fills), Decimal(0)) == delivered_max
    assert len({f.fill_key for f in fills}) == len(fills)
    assert (position or Decimal(0)) == delivered_max
    assert filled_events == sum(t.to_state in ("PARTIAL_FILLED", "FULLY_FILLED") for t in trail)
    if delivered_max:
        assert order.avg_fill_price is not None
        cost = sum((f.quantity * f.price for f in fills), Decimal(0))
        assert abs(cost / delivered_max - order.avg_fill_price) < Decimal("1e-6")
    # The audit trail is a valid path from IDLE to the order's state.
    path = [S(trail[0].from_state), *(S(t.to_state) for t in trail)]
    assert path[0] is S.IDLE and path[-1].value == order.state and is_valid_path(path)
    # Without Arbiter's own cancel the order ends where the brokerage's last word puts it.
    final = snapshots[-1]
    if cancelled_with is None:
        assert order.state == final.state.value
    elif delivered_max > cancelled_with:
        assert order.needs_manual_review  # a fill that raced our cancel: applied, and reviewed


def test_a_stale_report_after_the_final_one_is_not_an_anomaly(database: Database) -> None:
    reset_database(database)
    order_id = _pending_order(database)
    new, filled = _report("new", Decimal(0), None), _report("filled", Decimal(QUANTITY),
                                                             Decimal("10"))
    for report in (filled, new):  # e.g. submit's POST answer, settled after reconciliation
        with database.unit_of_work() as uow:
            settle(uow.session, OrderManager(uow.session).lock(order_id), report, actor=ACTOR)
            uow.commit()
    with database.unit_of_work() as uow:
        order = uow.session.get(Order, order_id)
    assert order is not None and order.state == "FULLY_FILLED"
    assert not order.needs_manual_review, order.reason
