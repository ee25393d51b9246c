"""The signal pipeline end to end: real worker processes, Postgres, Redis and the simulator."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from db.engine import Database
from db.models import ConflictLog, EventRecord, Order, Position, TickerOwnership
from strategy_client.client import SignalClient
from tests.fixtures.database import order_event_types
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.simulator import Simulator
from tests.system.helpers import order_by_coid, wait_terminal

pytestmark = pytest.mark.system


def test_the_three_conflict_scenarios_read_right(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    start_worker()
    # long_term owns NVDA (locked 90 days); trading owns TSLA (no lock); long_term owns AAPL.
    setup = [
        client.submit_signal("long_term", "NVDA", "buy", 20, signal_id="lt-nvda"),
        client.submit_signal("trading", "TSLA", "buy", 10, signal_id="tr-tsla"),
        client.submit_signal("long_term", "AAPL", "buy", 100, signal_id="lt-aapl"),
    ]
    assert {o.state for o in wait_terminal(db, setup)} == {"FULLY_FILLED"}

    blocked = client.submit_signal("trading", "NVDA", "sell", 10, signal_id="tr-nvda-sell")
    override = client.submit_signal("long_term", "TSLA", "buy", 100, signal_id="lt-tsla")
    own = client.submit_signal("long_term", "AAPL", "sell", 50, signal_id="lt-aapl-sell")
    wait_terminal(db, [blocked, override, own])

    with db.unit_of_work() as uow:
        s = uow.session
        logs = {
            c.ticker: c
            for c in s.scalars(select(ConflictLog).where(ConflictLog.order_id.isnot(None)))
        }
        nvda, tsla, aapl = logs["NVDA"], logs["TSLA"], logs["AAPL"]
        assert nvda.resolution == "blocked"
        assert "insufficient priority" in nvda.reasoning
        assert (nvda.requesting_strategy.name, nvda.owning_strategy.name) == (
            "trading",
            "long_term",
        )
        assert tsla.resolution == "priority_override"
        assert (tsla.requesting_strategy.name, tsla.owning_strategy.name) == (
            "long_term",
            "trading",
        )
        assert aapl.resolution == "allowed" and "own position" in aapl.reasoning
        owners = {
            o.ticker: o.strategy.name
            for o in s.scalars(select(TickerOwnership).where(TickerOwnership.released_at.is_(None)))
        }
        assert owners == {"NVDA": "long_term", "TSLA": "long_term", "AAPL": "long_term"}
        positions = {(p.strategy.name, p.ticker): p.quantity for p in s.scalars(select(Position))}
        # trading's 10 TSLA moved to long_term with the ownership, then long_term bought 100.
        assert positions[("long_term", "TSLA")] == 110
        assert positions[("trading", "TSLA")] == 0
        assert positions[("long_term", "AAPL")] == 50

    blocked_order = order_by_coid(db, blocked)
    assert blocked_order is not None and blocked_order.state == "REJECTED"
    assert "insufficient priority" in (blocked_order.reason or "")
    assert {
        "conflict_detected",
        "order_blocked_by_conflict",
        "conflict_resolved",
        "signal_rejected",
    } <= set(order_event_types(db, blocked_order.id))
    override_order = order_by_coid(db, override)
    assert override_order is not None and override_order.state == "FULLY_FILLED"
    assert {"conflict_detected", "priority_override", "order_filled"} <= set(
        order_event_types(db, override_order.id)
    )
    with db.unit_of_work() as uow:
        transferred = uow.session.scalar(
            select(func.count())
            .select_from(EventRecord)
            .where(EventRecord.type == "ownership_transferred", EventRecord.ticker == "TSLA")
        )
    assert transferred == 1
    # The brokerage saw each accepted order once, and never the blocked one.
    orders = simulator.admin.orders()
    coids = [o["client_order_id"] for o in orders]
    assert len(coids) == len(set(coids)) == 5
    assert blocked not in coids


def test_a_repeated_signal_id_makes_one_order_and_one_brokerage_order(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    worker = start_worker()
    coids = {
        client.submit_signal("trading", "AMD", "buy", 5, signal_id="same-signal") for _ in range(5)
    }
    assert len(coids) == 1
    wait_terminal(db, coids)
    with db.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Order)) == 1
    assert len(simulator.admin.orders()) == 1
    # Every log line a step writes names its order (structured context); the main process
    # only receives messages, before any order is known.
    (coid,) = coids
    step_lines = [
        line
        for line in worker.log().splitlines()
        if "arbiter.check_conflict[" in line and "ForkPoolWorker" in line
    ]
    assert step_lines
    assert all(f"client_order_id={coid}" in line for line in step_lines)
    assert all("strategy=trading" in line and "ticker=AMD" in line for line in step_lines)
