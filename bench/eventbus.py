"""Event bus figures: outbox-to-pub/sub lag under load, and a subscriber's catch-up rate.

The lag listener runs in a process of its own (spawned), so the load generator's GIL never
delays a receive: it PSUBSCRIBEs `<prefix>.*` and records receive time - envelope occurred_at.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from datetime import datetime
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import redis

from bench.measure import Postgres, percentiles


def _listen(redis_url: str, pattern: str, out: str, ready: MpEvent, stop: MpEvent) -> None:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.psubscribe(pattern)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # Redis confirms: from now on nothing is missed
        confirmed = pubsub.get_message(timeout=0.5)
        if confirmed is not None and confirmed["type"] == "psubscribe":
            ready.set()
            break
    lags: list[float] = []
    while not stop.is_set():
        message = pubsub.get_message(timeout=0.2)
        if message is None or message.get("type") != "pmessage":
            continue
        received = time.time()
        occurred = json.loads(message["data"])["occurred_at"]
        lags.append(1000 * (received - datetime.fromisoformat(occurred).timestamp()))
    pubsub.close()
    Path(out).write_text(json.dumps(lags))


class LagListener:
    def __init__(self, redis_url: str, prefix: str, out: Path) -> None:
        ctx = mp.get_context("spawn")
        self.out = out
        self.ready = ctx.Event()
        self.stop_event = ctx.Event()
        self.proc = ctx.Process(target=_listen, daemon=True,
                                args=(redis_url, f"{prefix}.*", str(out), self.ready,
                                      self.stop_event))

    def start(self) -> LagListener:
        self.proc.start()
        if not self.ready.wait(120):  # a spawn on a loaded machine is slow
            self.close()
            raise RuntimeError("lag listener did not subscribe")
        return self

    def finish(self) -> dict[str, Any]:
        time.sleep(0.3)  # let the last publications arrive
        self.stop_event.set()
        self.proc.join(10)
        lags = json.loads(self.out.read_text()) if self.out.exists() else []
        return {"events": len(lags), "lag_ms": percentiles(lags)}

    def close(self) -> None:
        if self.proc.is_alive():
            self.stop_event.set()
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()


def catch_up(redis_url: str, database_url: str, prefix: str, pg: Postgres,
             timeout: float = 300.0) -> dict[str, Any]:
    """A fresh EventSubscriber started from the run's first event id: events/s until ready."""
    from strategy_client.subscriber import EventSubscriber

    rows = pg.query("SELECT id, (SELECT count(*) FROM events) FROM events ORDER BY seq LIMIT 1")
    if not rows:
        return {"events": 0, "per_s": 0.0}
    first_id, total = rows[0]
    subscriber = EventSubscriber(redis_url, database_url, prefix)
    subscriber.on(None, lambda event: None)
    began = time.monotonic()
    thread = subscriber.run_in_thread(last_seen_id=first_id)
    try:
        ready = thread.wait_ready(timeout)
        elapsed = time.monotonic() - began
    finally:
        thread.stop()
    return {"history_events": int(total), "delivered": subscriber.delivered, "ready": ready,
            "seconds": round(elapsed, 2),
            "per_s": round(subscriber.delivered / max(elapsed, 1e-9), 1)}
