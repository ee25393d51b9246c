"""Fuzzed input against a real worker: hypothesis-made signals at the client (InvalidSignal
naming a field, or accepted) and raw messages straight onto the queue (an order REJECTED with a
reason, or processed normally); a brokerage answering garbage during submission. Afterwards: the
worker lives with the same pids, the queues are empty, every order is settled and its audit
trail is a valid path. Hand-picked cases of the same kind: tests/system/test_bad_input.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from core.errors import InvalidSignal
from core.states import TERMINAL_STATES, OrderState, is_valid_path
from db.engine import Database
from db.models import Order, OrderTransition
from strategy_client import routing
from strategy_client.client import SignalClient
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.simulator import Simulator
from tests.system.helpers import eventually

pytestmark = pytest.mark.system

FIELDS = {"strategy", "signal_id", "ticker", "side", "quantity", "order_type", "limit_price",
          "time_in_force", "signal"}
TERMINAL = {s.value for s in TERMINAL_STATES}
FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

odd_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["AAPL'; DROP TABLE orders;--", "<script>alert(1)</script>", "ÄPFEL",
                     "${jndi:ldap://x}", "../../etc/passwd", "AAPL\x00", "🚀", "BRK.B", " aapl ",
                     "%s%s%n", "' OR 1=1 --", "A" * 300]),
)
numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1", "-1", "NaN", "inf", "1e400", "0.0000000001", "ten", "", "1_000"]),
    st.booleans(),
    st.none(),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@st.composite
def signal_fields(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly-plausible signals with some fields wrong, missing or extra."""
    fields: dict[str, Any] = {
        "strategy": draw(st.sampled_from(["trading", "aggressive", "long_term"]) | odd_text),
        "signal_id": draw(st.uuids().map(str) | odd_text),
        "ticker": draw(st.sampled_from(["AAPL", "MSFT", "F"]) | odd_text | numbers),
        "side": draw(st.sampled_from(["buy", "sell", "SELL"]) | odd_text | numbers),
        "quantity": draw(st.integers(1, 5) | numbers | odd_text),
        "order_type": draw(st.just("market") | odd_text),
        "limit_price": draw(st.none() | numbers),
    }
    for name in draw(st.sets(st.sampled_from(sorted(fields)), max_size=2)):
        del fields[name]
    fields.update(draw(st.dictionaries(st.sampled_from(["leverage", "note", "__class__"]),
                                       json_values, max_size=1)))
    return fields


def _settled_with_valid_trails(db: Database) -> list[Order]:
    """Every order terminal (or in review), REJECTED ones with a reason, each trail a valid
    path from IDLE to the order's state."""
    with db.unit_of_work() as uow:
        orders = list(uow.session.scalars(select(Order)))
        trails: dict[int, list[OrderTransition]] = {}
        for row in uow.session.scalars(select(OrderTransition).order_by(OrderTransition.id)):
            trails.setdefault(row.order_id, []).append(row)
    for order in orders:
        assert order.state in TERMINAL or order.needs_manual_review, order.client_order_id
        assert order.state != "REJECTED" or order.reason
        trail = trails.get(order.id, [])
        path = [OrderState(trail[0].from_state), *(OrderState(t.to_state) for t in trail)]
        assert path[0] is OrderState.IDLE and path[-1].value == order.state
        assert is_valid_path(path), [p.value for p in path]
    return orders


def _queues_empty(redis_url: str) -> bool:
    queues = redis.Redis.from_url(redis_url)
    return all(queues.llen(q) == 0 for q in (routing.SIGNALS_QUEUE, routing.ORDERS_QUEUE))


def test_fuzzed_signals_and_raw_messages_end_settled_and_the_worker_lives(
    db: Database,
    redis_url: str,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    worker = start_worker()
    pids = worker.pids
    accepted: set[str] = set()

    @FUZZ
    @given(fields=signal_fields())
    def at_the_client(fields: dict[str, Any]) -> None:
        try:
            accepted.add(client.submit_signal(**fields))
        except InvalidSignal as exc:
            assert exc.field in FIELDS, exc.field
            assert str(exc)
        except TypeError as exc:  # a required keyword missing: Python's own refusal
            assert "argument" in str(exc)

    @FUZZ
    @given(raw=signal_fields() | json_values, how=st.sampled_from(["enqueue", "args", "kw"]))
    def onto_the_queue(raw: Any, how: str) -> None:
        if how == "enqueue":
            client.enqueue(raw)
        elif how == "args":
            client.app.send_task(routing.INTAKE, args=(raw, raw))
        else:
            client.app.send_task(routing.INTAKE, args=(), kwargs={"raw": raw})

    at_the_client()
    onto_the_queue()
    # A ticker the fuzz never trades, so no fuzzed owner can block it.
    good = client.submit_signal("trading", "GOOD", "buy", 1, signal_id="after-the-fuzz")
    accepted.add(good)

    eventually(lambda: _queues_empty(redis_url), timeout=60)

    def all_settled() -> bool:
        with db.unit_of_work() as uow:
            rows = dict(uow.session.execute(select(Order.client_order_id, Order.state)).all())
        return accepted <= set(rows) and all(s in TERMINAL for s in rows.values())

    eventually(all_settled, timeout=60)
    orders = _settled_with_valid_trails(db)
    assert {o.state for o in orders if o.client_order_id == good} == {"FULLY_FILLED"}
    assert worker.proc is not None and worker.proc.poll() is None
    assert worker.pids == pids  # no pool child died on the way


def test_garbage_from_the_brokerage_during_submission_leaves_nothing_stuck(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    simulator.admin.set_faults(garbage_rate=0.4)
    worker = start_worker()
    start_beat()
    pids = worker.pids
    # Marketable limit orders: validation asks the brokerage for no price, so the garbage
    # meets submission only (a market order's price look-up would retry, and after its last
    # retry wait for the stalled sweep, which is tested elsewhere).
    coids = [
        client.submit_signal(
            "trading", f"G{i}", "buy", 1, signal_id=f"garbage-{i}",
            order_type="limit", limit_price="1000",  # above any price: marketable
        )
        for i in range(12)
    ]
    last: list[Any] = []

    def all_tried() -> bool:
        with db.unit_of_work() as uow:
            rows = list(uow.session.execute(select(
                Order.client_order_id, Order.state, Order.submit_attempts)))
        last[:] = rows
        return len(rows) == len(coids) and all(s in TERMINAL or n for _, s, n in rows)

    try:
        eventually(all_tried, timeout=120)
    except AssertionError:
        raise AssertionError(f"never tried: {[r for r in last if not r[2]]}") from None
    # Garbage during submission only: under a sustained garbage rate no reconciliation pass
    # completes (its first unreadable answer aborts the pass), reported to the lead.
    simulator.admin.set_faults(garbage_rate=0.0)

    def settled() -> bool:
        with db.unit_of_work() as uow:
            rows = list(uow.session.execute(select(
                Order.client_order_id, Order.state, Order.needs_manual_review, Order.reason,
                Order.submit_attempts)))
        last[:] = rows
        return len(rows) == len(coids) and all(s in TERMINAL or r for _, s, r, _, _ in rows)

    try:
        eventually(settled, timeout=120)
    except AssertionError:
        raise AssertionError(f"stuck: {[r for r in last if r[1] not in TERMINAL]}") from None
    orders = _settled_with_valid_trails(db)
    for order in orders:
        assert order.needs_manual_review or order.state in ("REJECTED", "FAILED", "FULLY_FILLED")
    at_brokerage = [o["client_order_id"] for o in simulator.admin.orders()]
    assert len(at_brokerage) == len(set(at_brokerage))  # still at most one each
    assert worker.proc is not None and worker.proc.poll() is None
    assert worker.pids == pids
