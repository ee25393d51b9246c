"""Crashes, outages and lies, with real worker, beat and simulator processes: Arbiter converges
to the brokerage, which is the source of truth."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from db.engine import Database
from db.models import EventRecord, Fill, Order, Position, ReviewItem, TickerOwnership
from strategy_client.client import SignalClient
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.simulator import Simulator
from tests.system.helpers import eventually, wait_terminal

pytestmark = pytest.mark.system


def _one_brokerage_order_each(simulator: Simulator, coids: list[str]) -> None:
    seen = defaultdict(int)
    for order in simulator.admin.orders():
        seen[order["client_order_id"]] += 1
    assert all(seen[c] == 1 for c in coids), dict(seen)
    assert all(n == 1 for n in seen.values())


def _positions_match_brokerage(db: Database, simulator: Simulator) -> None:
    ours: dict[str, Decimal] = defaultdict(Decimal)
    with db.unit_of_work() as uow:
        for p in uow.session.scalars(select(Position)):
            ours[p.ticker] += p.quantity
    theirs = {p["symbol"]: Decimal(p["qty"]) for p in simulator.admin.positions()}
    assert {t: q for t, q in ours.items() if q} == {t: q for t, q in theirs.items() if q}


def test_worker_killed_after_the_brokerage_accepted_converges_with_one_brokerage_order(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    simulator: Simulator,
    tmp_path: Path,
) -> None:
    doomed = start_worker(
        "doomed",
        extra_env={
            "ARBITER_CRASH_POINTS": "after_brokerage_accepted",
            "ARBITER_CRASH_STATE_DIR": tmp_path,
            "ARBITER_CRASH_WHOLE_WORKER": "1",
        },
    )
    start_beat()
    coid = client.submit_signal("long_term", "AAPL", "buy", 10, signal_id="crash-1")
    eventually(lambda: doomed.proc is not None and doomed.proc.poll() is not None)
    # The brokerage has the order; Arbiter recorded only the attempt.
    assert [o["client_order_id"] for o in simulator.admin.orders()] == [coid]
    start_worker("phoenix")
    (order,) = wait_terminal(db, [coid])
    assert order.state == "FULLY_FILLED"
    assert order.submit_attempts >= 1
    _one_brokerage_order_each(simulator, [coid])
    _positions_match_brokerage(db, simulator)


def test_a_pool_child_killed_before_its_ack_is_redelivered_harmlessly(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
    tmp_path: Path,
) -> None:
    start_worker(
        extra_env={"ARBITER_CRASH_POINTS": "before_ack:3", "ARBITER_CRASH_STATE_DIR": tmp_path}
    )
    coids = [
        client.submit_signal("trading", f"T{i}", "buy", 1, signal_id=f"ack-{i}") for i in range(3)
    ]
    orders = wait_terminal(db, coids)
    assert (tmp_path / "before_ack.fired").exists()
    assert {o.state for o in orders} == {"FULLY_FILLED"}
    _one_brokerage_order_each(simulator, coids)


def test_fills_that_happen_while_every_worker_is_down_are_applied_once(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    simulator.admin.pause_fills()
    worker = start_worker()
    coids = [
        client.submit_signal("dividend", f"D{i}", "buy", 5, signal_id=f"down-{i}") for i in range(5)
    ]

    def all_sent() -> bool:
        with db.unit_of_work() as uow:
            states = list(uow.session.scalars(select(Order.state)))
        return len(states) == 5 and set(states) == {"ORDER_SENT"}

    eventually(all_sent)
    worker.kill()
    simulator.admin.resume_fills()
    eventually(lambda: all(o["status"] == "filled" for o in simulator.admin.orders()))
    start_worker("back")
    start_beat()
    orders = wait_terminal(db, coids)
    assert {o.state for o in orders} == {"FULLY_FILLED"}
    with db.unit_of_work() as uow:
        fills = uow.session.scalar(select(func.count()).select_from(Fill))
    assert fills == 5
    _positions_match_brokerage(db, simulator)


def test_accept_then_timeout_makes_no_second_brokerage_order(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    simulator.admin.set_faults(accept_then_timeout_count=1, hang_ms=4000)
    start_worker()
    coid = client.submit_signal("trading", "NFLX", "buy", 3, signal_id="att-1")
    (order,) = wait_terminal(db, [coid])
    assert order.state == "FULLY_FILLED"
    # The timed-out attempt, then either the retry's lookup or a reconciliation found it.
    assert order.submit_attempts in (1, 2)
    _one_brokerage_order_each(simulator, [coid])


def test_orders_stalled_before_submission_and_never_received_are_settled(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    # Signals accepted while no worker ran, then frozen at each step as if a worker died.
    start_worker("first")
    coids = [
        client.submit_signal("aggressive", f"S{i}", "buy", 1, signal_id=f"stall-{i}")
        for i in range(4)
    ]
    wait_terminal(db, coids)
    stalled = {
        coids[0]: ("SIGNAL_RECEIVED", 0),
        coids[1]: ("VALIDATING", 0),
        coids[2]: ("ORDER_PENDING", 0),
        coids[3]: ("ORDER_PENDING", 1),  # an attempt the brokerage never received
    }
    with db.unit_of_work() as uow:
        s = uow.session
        for coid, (state, attempts) in stalled.items():
            # Rewind the test orders (a fixture-level edit: the app never does this).
            s.execute(
                text(
                    "UPDATE orders SET state = :state, submit_attempts = :n, filled_quantity = 0, "
                    "avg_fill_price = NULL, brokerage_order_id = NULL, "
                    "last_submit_at = now() - interval '1 hour', "
                    "client_order_id = client_order_id || '-r' WHERE client_order_id = :coid"
                ),
                {"state": state, "n": attempts, "coid": coid},
            )
        s.execute(text("UPDATE orders SET updated_at = now() - interval '1 hour'"))
        s.execute(text("DELETE FROM fills"))
        s.execute(text("DELETE FROM positions"))
        s.execute(text("UPDATE ticker_ownership SET released_at = NULL"))
        uow.commit()
    rewound = [c + "-r" for c in coids]
    start_beat()
    orders = {o.client_order_id: o for o in wait_terminal(db, rewound, timeout=90)}
    assert orders[rewound[3]].state == "FAILED"
    assert "never received" in (orders[rewound[3]].reason or "")
    assert {orders[c].state for c in rewound[:3]} == {"FULLY_FILLED"}
    with db.unit_of_work() as uow:
        live = uow.session.scalar(
            select(TickerOwnership).where(
                TickerOwnership.ticker == "S3", TickerOwnership.released_at.is_(None)
            )
        )
    assert live is None  # the failed order's claim was released


def test_a_position_changed_behind_our_back_opens_a_review(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    start_worker()
    coid = client.submit_signal("long_term", "IBM", "buy", 10, signal_id="pos-1")
    wait_terminal(db, [coid])
    simulator.admin.adjust_position("IBM", qty=5)
    start_beat()

    def mismatch_reported() -> bool:
        with db.unit_of_work() as uow:
            events = uow.session.scalar(
                select(func.count())
                .select_from(EventRecord)
                .where(EventRecord.type == "reconciliation_mismatch", EventRecord.ticker == "IBM")
            )
            reviews = uow.session.scalar(
                select(func.count())
                .select_from(ReviewItem)
                .where(
                    ReviewItem.kind == "position",
                    ReviewItem.ticker == "IBM",
                    ReviewItem.resolved_at.is_(None),
                )
            )
        return bool(events) and reviews == 1

    eventually(mismatch_reported, timeout=60)


def test_two_beats_at_once_do_no_double_work(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    simulator.admin.pause_fills()
    worker = start_worker()
    start_beat("beat-a")
    start_beat("beat-b")
    coids = [
        client.submit_signal("trading", f"B{i}", "buy", 2, signal_id=f"beat-{i}") for i in range(6)
    ]
    simulator.admin.resume_fills()
    orders = wait_terminal(db, coids)
    assert {o.state for o in orders} == {"FULLY_FILLED"}
    eventually(lambda: "skipped, already run in this interval" in worker.log(), timeout=30)
    with db.unit_of_work() as uow:
        fills = uow.session.scalar(select(func.count()).select_from(Fill))
        filled_events = uow.session.scalar(
            select(func.count()).select_from(EventRecord).where(EventRecord.type == "order_filled")
        )
    assert fills == 6 and filled_events == 6
    _one_brokerage_order_each(simulator, coids)


def test_postgres_connections_cut_under_the_workers_are_retried(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    start_worker()
    warm = client.submit_signal("trading", "CUT0", "buy", 1, signal_id="cut-0")
    wait_terminal(db, [warm])  # the pool processes now hold pooled connections
    with db.unit_of_work() as uow:
        cut = uow.session.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'arbiter-%' "
                "AND pid <> pg_backend_pid()"
            )
        )
    assert cut
    coids = [
        client.submit_signal("trading", f"CUT{i}", "buy", 1, signal_id=f"cut-{i}")
        for i in range(1, 5)
    ]
    orders = wait_terminal(db, coids)
    assert {o.state for o in orders} == {"FULLY_FILLED"}
    _one_brokerage_order_each(simulator, [warm, *coids])


def test_a_signal_lost_between_queue_and_worker_is_sent_again(
    db: Database,
    redis_url: str,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    # The client noted the signal, then its message vanished (a worker killed between
    # kombu's BRPOP and its unacked bookkeeping): only the note is left.
    import json
    import time

    import redis as redis_py

    from core.signals import Signal
    from strategy_client.pending import PENDING_KEY

    signal = Signal.parse(
        {
            "strategy": "trading",
            "signal_id": "lost-1",
            "ticker": "LOST",
            "side": "buy",
            "quantity": "2",
        }
    )
    from tests.fixtures.keys import signed

    # Signed with the strategy's key, as its client sends it (intake refuses unsigned signals).
    note = {"message": signed(db, signal.to_message()), "at": time.time() - 600}
    redis_py.Redis.from_url(redis_url).hset(PENDING_KEY, signal.client_order_id, json.dumps(note))
    start_worker()
    start_beat()
    (order,) = wait_terminal(db, [signal.client_order_id])
    assert order.state == "FULLY_FILLED"
    eventually(
        lambda: not redis_py.Redis.from_url(redis_url).hexists(PENDING_KEY, signal.client_order_id)
    )
    _one_brokerage_order_each(simulator, [signal.client_order_id])
