"""Fill to FULLY_FILLED: how long after the brokerage fills an order Arbiter holds it as filled.

A simulator of its own fills each order 200 ms after accepting it (so the fill never rides on
the POST answer); the workers of the primary shape and one `arbiter stream` consumer run
against it, with no beat, so every fill arrives through the trade_updates stream. Signals go
at a steady modest rate; the latency of each order is Arbiter's FULLY_FILLED transition time
(Postgres clock) minus the simulator's fill transaction_time (same machine clock).
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from bench.load import STRATEGY, TICKERS
from bench.measure import Postgres, percentiles
from bench.stack import REPO_ROOT, Deployment
from strategy_client.client import SignalClient
from strategy_client.routing import ORDERS_QUEUE, SIGNALS_QUEUE
from tests.fixtures.simulator import Simulator

PIPELINE_QUEUES = (SIGNALS_QUEUE, ORDERS_QUEUE)
PRIORITY_SUFFIXES = ("\x06\x163", "\x06\x166", "\x06\x169")  # kombu's Redis priority lists
FILL_LATENCY_MS = 200
SIGNALS = 100
RATE_PER_S = 10.0


class StreamConsumer:
    """One `arbiter stream` process, logging to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from arbiter.cli import main; main()", "stream"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_active(self, sim: Simulator, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"arbiter stream exited:\n{self.log_path.read_text()[-3000:]}")
            if sim.admin.http.get("/admin/stream").json()["connections"] >= 1:
                return
            time.sleep(0.1)
        raise RuntimeError(f"arbiter stream not listening:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def drop_backlog(redis_url: str) -> int:
    """Signals the open loop left queued would load this phase's workers: dropped (their
    orders stay where they are in this throwaway database)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [f"{q}{sep}" for q in PIPELINE_QUEUES for sep in ("", *PRIORITY_SUFFIXES)]
        return int(client.delete(*keys))
    finally:
        client.close()


def measure(
    env: dict[str, str],
    data: Path,
    work: Path,
    shape: str,
    redis_url: str,
    pg: Postgres,
    timeout_s: float,
) -> dict[str, Any]:
    drop_backlog(redis_url)
    sim = Simulator(
        data / "brokersim-fill", {"fill_latency_ms": FILL_LATENCY_MS, "partial_slices": 1}
    )
    sim.start()
    env = {**env, "ARBITER_BROKERAGE_URL": sim.url}
    workers = stream = None
    keys = dict(pg.query("SELECT name, signing_key FROM strategies"))
    client = SignalClient(redis_url, keys=keys)
    try:
        workers = Deployment("tasks", shape, env, work).start()
        stream = StreamConsumer(env, work / "stream.log")
        stream.wait_active(sim)
        tag = f"ftf{int(time.time())}"
        t0 = time.monotonic()
        for i in range(SIGNALS):
            time.sleep(max(0.0, t0 + i / RATE_PER_S - time.monotonic()))
            client.submit_signal(
                STRATEGY, TICKERS[i % len(TICKERS)], "buy", 1, signal_id=f"{tag}-{i}"
            )
        return _collect(sim, pg, tag, timeout_s)
    finally:
        client.close()
        if stream is not None:
            stream.stop()
        if workers is not None:
            workers.stop()
        sim.close()


def _collect(sim: Simulator, pg: Postgres, tag: str, timeout_s: float) -> dict[str, Any]:
    query = (
        "SELECT o.brokerage_order_id, extract(epoch FROM t.created_at), t.actor "
        "FROM orders o JOIN order_transitions t ON t.order_id = o.id "
        "WHERE o.signal_id LIKE %s AND t.to_state = 'FULLY_FILLED'"
    )
    deadline = time.monotonic() + timeout_s
    rows = pg.query(query, (f"{tag}-%",))
    while len(rows) < SIGNALS and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = pg.query(query, (f"{tag}-%",))
    filled_at = {
        f["order_id"]: datetime.fromisoformat(str(f["transaction_time"]).replace("Z", "+00:00"))
        for f in sim.admin.fills()
    }
    latencies = [
        1000 * (float(at) - filled_at[boid].timestamp())
        for boid, at, _ in rows
        if boid in filled_at
    ]
    actors: dict[str, int] = {}
    for _, _, actor in rows:
        actors[actor] = actors.get(actor, 0) + 1
    return {
        "n": SIGNALS,
        "filled": len(rows),
        "rate_per_s": RATE_PER_S,
        "simulator_fill_latency_ms": FILL_LATENCY_MS,
        "filled_by": actors,
        "latency_ms": percentiles(latencies),
    }
