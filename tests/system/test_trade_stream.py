"""Fills streamed from the brokerage: `arbiter stream` processes against a real simulator, worker
and beat. The stream books fills; one consumer per account is active and a standby takes over;
a stream cut mid-run loses nothing, because reconciliation polls what the stream missed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from db.engine import Database
from db.models import Fill, Order, OrderTransition
from service_layer.trade_updates import ACTOR as STREAM_ACTOR
from strategy_client.client import SignalClient
from tasks.stream import LEASE_PREFIX
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.simulator import REPO_ROOT, Simulator
from tests.system.helpers import eventually, wait_terminal

pytestmark = pytest.mark.system

SLOW_POLLING = {"ARBITER_RECONCILE_INTERVAL_S": "3600"}  # polling cannot be who books a fill


class StreamProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from arbiter.cli import main; main()", "stream"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, marker: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"arbiter stream exited:\n{self.log()[-3000:]}")
            return marker in self.log()

        eventually(seen, timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_stream(
    arbiter_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., StreamProcess]]:
    started: list[StreamProcess] = []

    def start(name: str = "stream", wait_active: bool = True) -> StreamProcess:
        env = {**arbiter_env, "ARBITER_STREAM_LEASE_TTL_S": "2"}
        process = StreamProcess(env, tmp_path / f"{name}.log")
        started.append(process)
        process.wait_log("active:" if wait_active else "trade stream consumer")
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def simulator(simulator_factory: Callable[..., Simulator]) -> Simulator:
    """Fills 200 ms after acceptance, so the POST answer is `accepted` and the fill comes later
    (the worker, beat and stream of this module all talk to this one)."""
    return simulator_factory(fill_latency_ms=200)


def _actors_to(db: Database, state: str) -> dict[str, str]:
    with db.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Order.client_order_id, OrderTransition.actor)
            .join(OrderTransition, OrderTransition.order_id == Order.id)
            .where(OrderTransition.to_state == state)
        )
        return {coid: actor for coid, actor in rows}


def _fills_per_order(db: Database) -> dict[str, int]:
    with db.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Order.client_order_id, func.count(Fill.id))
            .join(Fill, Fill.order_id == Order.id)
            .group_by(Order.client_order_id)
        )
        return {coid: count for coid, count in rows}


def _wait_connections(sim: Simulator, count: int) -> None:
    eventually(lambda: sim.admin.http.get("/admin/stream").json()["listening"] == count, 30)


def test_a_fill_is_booked_by_the_stream(
    db: Database,
    client: SignalClient,
    arbiter_env: dict[str, str],
    simulator: Simulator,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    start_stream: Callable[..., StreamProcess],
) -> None:
    arbiter_env.update(SLOW_POLLING)
    start_worker()
    start_beat()
    start_stream()
    _wait_connections(simulator, 1)
    coid = client.submit_signal("trading", "AAPL", "buy", 7, signal_id="stream-1")
    [order] = wait_terminal(db, [coid], timeout=30)
    assert order.state == "FULLY_FILLED"
    assert order.filled_quantity == 7
    assert _actors_to(db, "FULLY_FILLED")[coid] == STREAM_ACTOR
    assert _fills_per_order(db) == {coid: 1}


def test_one_consumer_is_active_and_the_standby_takes_over(
    db: Database,
    client: SignalClient,
    arbiter_env: dict[str, str],
    redis_url: str,
    simulator: Simulator,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    start_stream: Callable[..., StreamProcess],
) -> None:
    arbiter_env.update(SLOW_POLLING)
    start_worker()
    start_beat()
    first = start_stream("first")
    second = start_stream("second", wait_active=False)
    second.wait_log("standby:")
    _wait_connections(simulator, 1)  # only the holder of the lease listens
    lease_key = LEASE_PREFIX + simulator.brokerage().account().account_id
    lease = redis.Redis.from_url(redis_url)
    holder = lease.get(lease_key)
    assert holder is not None and f":{first.proc.pid}:" in holder.decode()

    before = client.submit_signal("trading", "MSFT", "buy", 3, signal_id="stream-before")
    assert wait_terminal(db, [before], timeout=30)[0].state == "FULLY_FILLED"

    first.kill()  # SIGKILL: the lease is not released, it expires
    second.wait_log("active:")
    now = lease.get(lease_key)
    assert now is not None and f":{second.proc.pid}:" in now.decode()
    _wait_connections(simulator, 1)

    after = client.submit_signal("trading", "MSFT", "buy", 4, signal_id="stream-after")
    assert wait_terminal(db, [after], timeout=30)[0].state == "FULLY_FILLED"
    actors = _actors_to(db, "FULLY_FILLED")
    assert actors[before] == actors[after] == STREAM_ACTOR
    assert _fills_per_order(db) == {before: 1, after: 1}


def test_a_stream_cut_mid_run_loses_nothing_and_books_nothing_twice(
    db: Database,
    client: SignalClient,
    simulator: Simulator,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    start_stream: Callable[..., StreamProcess],
) -> None:
    start_worker()
    start_beat()  # reconciling every second: the safety net
    start_stream()
    _wait_connections(simulator, 1)
    coids: list[str] = []

    def burst(tag: str, count: int) -> list[str]:
        batch = [
            client.submit_signal(
                "trading", f"S{tag[:2].upper()}{i}", "buy", i + 1, signal_id=f"{tag}-{i}"
            )
            for i in range(count)
        ]
        coids.extend(batch)
        return batch

    streamed = burst("live", 4)
    wait_terminal(db, streamed, timeout=60)

    # The stream refuses connections: these fills reach Arbiter only by polling.
    simulator.admin.set_faults(stream_down=True)
    _wait_connections(simulator, 0)
    missed = burst("down", 4)
    assert {o.state for o in wait_terminal(db, missed, timeout=60)} == {"FULLY_FILLED"}
    actors = _actors_to(db, "FULLY_FILLED")
    assert STREAM_ACTOR not in {actors[c] for c in missed}
    simulator.admin.set_faults(stream_down=False)
    _wait_connections(simulator, 1)  # alpaca-py reconnected by itself

    # Cut again while fills are on their way; alpaca-py reconnects, polling fills the gap.
    racing = burst("cut", 6)
    time.sleep(0.1)
    simulator.admin.http.post("/admin/stream/drop").raise_for_status()
    assert {o.state for o in wait_terminal(db, racing, timeout=60)} == {"FULLY_FILLED"}
    _wait_connections(simulator, 1)

    after = burst("after", 3)
    wait_terminal(db, after, timeout=60)
    orders = wait_terminal(db, coids, timeout=60)
    assert {o.state for o in orders} == {"FULLY_FILLED"}
    assert all(o.filled_quantity == o.quantity for o in orders)
    assert _fills_per_order(db) == dict.fromkeys(coids, 1)
    assert STREAM_ACTOR in set(_actors_to(db, "FULLY_FILLED").values())
    with db.unit_of_work() as uow:  # and the brokerage agrees on every position
        flagged = uow.session.scalar(select(func.count()).where(Order.needs_manual_review))
    assert flagged == 0
