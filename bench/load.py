"""Closed and open loops over two targets: the ceiling chain and Arbiter's pipeline.

Closed loop: send N as fast as one client can, then wait until all reached the milestone;
throughput = count / (last milestone timestamp - first send). Open loop: send at a fixed rate,
each message at its scheduled time (a late send keeps its scheduled time, so a stalled client
does not hide queueing); latency = milestone timestamp - scheduled time. Milestone timestamps
are Postgres clock_timestamp() values, on the same machine's clock as the client's time.time().
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from celery import Celery, chain

from bench.ceiling_tasks import STEPS, TABLE_DDL
from bench.measure import Postgres, percentiles
from strategy_client.client import SignalClient

POLL_S = 0.1
STRATEGY = "trading"  # no ownership lock, so every buy on its own tickers passes
TICKERS = [f"B{i:04d}" for i in range(1000)]  # spread, so no ticker lock is contended


class Target(Protocol):
    milestones: tuple[str, ...]

    def prepare(self, tag: str, n: int) -> None: ...
    def send(self, tag: str, i: int) -> None: ...
    def progress(self) -> tuple[dict[str, tuple[int, float | None]], int]: ...
    def done_times(self, tag: str) -> dict[int, float]: ...


class Ceiling:
    milestones = ("done",)

    def __init__(self, redis_url: str, pg: Postgres) -> None:
        self.app = Celery("bench-ceiling-client", broker=redis_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"],
                             broker_connection_retry_on_startup=True,
                             task_routes={n: {"queue": q} for n, q in _ceiling_queues()})
        self.pg = pg
        pg.query(TABLE_DDL)
        self.next_id = 1
        self.lo = self.hi = 0

    def prepare(self, tag: str, n: int) -> None:
        self.lo, self.hi = self.next_id, self.next_id + n - 1
        self.next_id += n
        self.pg.query("INSERT INTO bench_ceiling (id) SELECT generate_series(%s::bigint, %s)",
                      (self.lo, self.hi))

    def send(self, tag: str, i: int) -> None:
        row = self.lo + i
        chain(*(self.app.signature(name, args=(row,) if k == 0 else ())
                for k, name in enumerate(STEPS))).apply_async()

    def progress(self) -> tuple[dict[str, tuple[int, float | None]], int]:
        row = self.pg.query("SELECT count(done_at), extract(epoch FROM max(done_at)) "
                            "FROM bench_ceiling WHERE id BETWEEN %s AND %s", (self.lo, self.hi))[0]
        return {"done": (int(row[0]), None if row[1] is None else float(row[1]))}, 0

    def done_times(self, tag: str) -> dict[int, float]:
        rows = self.pg.query("SELECT id, extract(epoch FROM done_at) FROM bench_ceiling "
                             "WHERE id BETWEEN %s AND %s AND done_at IS NOT NULL",
                             (self.lo, self.hi))
        return {int(r[0]) - self.lo: float(r[1]) for r in rows}

    def close(self) -> None:
        self.app.close()


def _ceiling_queues() -> list[tuple[str, str]]:
    from bench.ceiling_tasks import ROUTES

    return [(name, route["queue"]) for name, route in ROUTES.items()]


class Arbiter:
    """Signals through `SignalClient.submit_signal`; milestones from `order_transitions`."""

    milestones = ("ORDER_SENT", "FULLY_FILLED")
    _FAILED = ("REJECTED", "FAILED", "CANCELLED")

    def __init__(self, redis_url: str, pg: Postgres) -> None:
        keys = dict(pg.query("SELECT name, signing_key FROM strategies"))
        self.client = SignalClient(redis_url, keys=keys)
        self.pg = pg
        self.watermark = 0

    def prepare(self, tag: str, n: int) -> None:
        self.watermark = int(self.pg.query(
            "SELECT coalesce(max(id), 0) FROM order_transitions")[0][0])

    def send(self, tag: str, i: int) -> None:
        self.client.submit_signal(STRATEGY, TICKERS[i % len(TICKERS)], "buy", 1,
                                  signal_id=f"{tag}-{i}")

    def progress(self) -> tuple[dict[str, tuple[int, float | None]], int]:
        rows = self.pg.query(
            "SELECT to_state, count(*), extract(epoch FROM max(created_at)) "
            "FROM order_transitions WHERE id > %s AND to_state = ANY(%s) GROUP BY to_state",
            (self.watermark, [*self.milestones, *self._FAILED]))
        seen = {r[0]: (int(r[1]), float(r[2])) for r in rows}
        failed = sum(seen.get(s, (0, 0.0))[0] for s in self._FAILED)
        return {m: seen.get(m, (0, None)) for m in self.milestones}, failed

    def done_times(self, tag: str) -> dict[int, float]:
        rows = self.pg.query(
            "SELECT o.signal_id, extract(epoch FROM t.created_at) FROM order_transitions t "
            "JOIN orders o ON o.id = t.order_id WHERE t.id > %s AND t.to_state = 'ORDER_SENT'",
            (self.watermark,))
        prefix = f"{tag}-"
        return {int(r[0][len(prefix):]): float(r[1]) for r in rows if r[0].startswith(prefix)}

    def close(self) -> None:
        self.client.close()


def _wait(target: Target, n: int, timeout: float) -> tuple[dict[str, tuple[int, float | None]],
                                                            int]:
    deadline = time.monotonic() + timeout
    while True:
        seen, failed = target.progress()
        if seen[target.milestones[-1]][0] + failed >= n or time.monotonic() > deadline:
            return seen, failed
        time.sleep(POLL_S)


def closed_loop(target: Target, tag: str, n: int, timeout: float) -> dict[str, Any]:
    target.prepare(tag, n)
    t0 = time.time()
    for i in range(n):
        target.send(tag, i)
    send_s = time.time() - t0
    seen, failed = _wait(target, n, timeout)
    out: dict[str, Any] = {"n": n, "send_s": round(send_s, 2), "failed": failed,
                           "client_send_per_s": round(n / max(send_s, 1e-9), 1)}
    for milestone, (count, last) in seen.items():
        span = (last - t0) if last else float("nan")
        out[milestone] = {"count": count, "span_s": round(span, 3),
                          "per_s": round(count / span, 1) if last else 0.0}
    return out


def open_loop(target: Target, tag: str, rate: float, duration_s: float,
              timeout: float) -> dict[str, Any]:
    n = max(10, int(rate * duration_s))
    target.prepare(tag, n)
    t0 = time.time() + 0.05
    scheduled = [t0 + i / rate for i in range(n)]
    worst_behind = 0.0
    for i, at in enumerate(scheduled):
        ahead = at - time.time()
        if ahead > 0:
            time.sleep(ahead)
        else:
            worst_behind = max(worst_behind, -ahead)
        target.send(tag, i)
    _wait(target, n, timeout)
    done = target.done_times(tag)
    latencies = [1000 * (when - scheduled[i]) for i, when in done.items() if i < n]
    return {"n": n, "rate_per_s": round(rate, 1), "completed": len(done),
            "client_worst_behind_ms": round(1000 * worst_behind, 1),
            "latency_ms": percentiles(latencies)}
