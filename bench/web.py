"""Web figures: list-route latency over 100,000 orders, event-stream lag from commit, and 50
concurrent stream clients each receiving every event.

    python bench/web.py [--services local|embedded] [--orders 100000] [--json PATH]

`arbiter web` runs as its own process (uvicorn, one worker); the HTTP clients run in this
process for the list routes and in a spawned process for the streams, so neither the server
nor the stream readers share a GIL with the load generator. Rows are seeded with SQL
(generate_series), not through the pipeline: the routes' read paths are what is measured.
Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arbiter.embedded import free_port, libpq_url
from bench.measure import percentiles
from bench.stack import REPO_ROOT, Services
from core.events import Event, EventType
from db.engine import Database
from db.migrate import upgrade
from db.outbox import emit
from db.publisher import attach_publisher
from db.seed import seed_default_strategies
from db.tokens import create_token

PREFIX = "arbiter.bench.web"

SEED_SQL = [
    # Orders: 4 strategies, 500 tickers, states spread as a busy day leaves them.
    """
    INSERT INTO orders (client_order_id, strategy_id, strategy_name, signal_id, ticker, side,
                        quantity, state, filled_quantity, needs_manual_review, reason,
                        created_at, updated_at)
    SELECT 'bench-' || g, s.id, s.name, 'sig-' || g, 'T' || lpad((g % 500)::text, 4, '0'),
           CASE WHEN g % 3 = 0 THEN 'sell' ELSE 'buy' END, 1 + g % 50,
           (ARRAY['FULLY_FILLED','FULLY_FILLED','FULLY_FILLED','REJECTED','CANCELLED',
                  'ORDER_SENT','PARTIAL_FILLED','FAILED'])[1 + g % 8],
           0, g % 997 = 0, CASE WHEN g % 8 = 3 THEN 'blocked by conflict' END,
           now() - make_interval(secs => ({n} - g) * 0.5), now()
    FROM generate_series(1, {n}) g
    JOIN strategies s ON s.id = (SELECT id FROM strategies ORDER BY id OFFSET g % 4 LIMIT 1)
    """,
    """
    INSERT INTO order_transitions (order_id, from_state, to_state, reason, actor)
    SELECT id, 'IDLE', 'SIGNAL_RECEIVED', 'signal received', 'bench' FROM orders
    """,
    # Two events per order.
    """
    INSERT INTO events (id, type, occurred_at, source, order_id, client_order_id, strategy,
                        ticker, payload, schema_version, published_at)
    SELECT gen_random_uuid(), t.type, o.created_at, 'bench', o.id, o.client_order_id,
           o.strategy_name, o.ticker, '{}'::jsonb, 1, now()
    FROM orders o CROSS JOIN (VALUES ('signal_received'), ('order_filled')) t(type)
    """,
    # A conflict for every tenth order.
    """
    INSERT INTO conflict_logs (order_id, ticker, requesting_strategy_id, owning_strategy_id,
                               requesting_priority, owning_priority, action, resolution,
                               reasoning, created_at)
    SELECT o.id, o.ticker, o.strategy_id, other.id, 50, 100, o.side,
           (ARRAY['blocked','priority_override','allowed'])[1 + o.id % 3],
           'bench conflict', o.created_at
    FROM orders o JOIN strategies other ON other.name = 'long_term'
    WHERE o.id % 10 = 0 AND o.strategy_id <> other.id
    """,
    """
    INSERT INTO review_items (kind, order_id, ticker, reason)
    SELECT 'order', id, ticker, 'bench review' FROM orders WHERE needs_manual_review
    """,
    """
    INSERT INTO positions (strategy_id, ticker, quantity, avg_cost, realized_pnl)
    SELECT s.id, 'T' || lpad(g::text, 4, '0'), 10, 100, g FROM generate_series(0, 499) g
    JOIN strategies s ON s.id = (SELECT id FROM strategies ORDER BY id OFFSET g % 4 LIMIT 1)
    """,
    """
    INSERT INTO ticker_ownership (ticker, strategy_id, locked_until)
    SELECT 'T' || lpad(g::text, 4, '0'), s.id, now() + interval '30 days'
    FROM generate_series(0, 499) g
    JOIN strategies s ON s.id = (SELECT id FROM strategies ORDER BY id OFFSET g % 4 LIMIT 1)
    """,
    "ANALYZE",
]


def seed(url: str, orders: int) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for statement in SEED_SQL:
            conn.execute(statement.replace("{n}", str(int(orders))).encode())


def start_web(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from arbiter.cli import main; main()", "web",
             "--port", str(port), "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 120  # a loaded machine imports slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"arbiter web did not start:\n{log.read_text()[-3000:]}")


def list_routes(base: str, token: str, requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx.Client(base_url=base, headers=headers, timeout=30)
    middle = http.get("/api/v1/orders", params={"limit": 1}).json()["items"][0]["id"] // 2
    deep = http.get("/api/v1/orders", params={"limit": 50, "state": "FULLY_FILLED"}).json()
    cursor = deep["next_cursor"]
    import base64

    mid_cursor = base64.urlsafe_b64encode(json.dumps([middle]).encode()).decode().rstrip("=")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    routes: dict[str, tuple[str, dict[str, Any]]] = {
        "orders": ("/api/v1/orders", {}),
        "orders?state": ("/api/v1/orders", {"state": "CANCELLED"}),
        "orders?strategy": ("/api/v1/orders", {"strategy": "dividend"}),
        "orders?ticker": ("/api/v1/orders", {"ticker": "T0042"}),
        "orders?review": ("/api/v1/orders", {"review": "true"}),
        "orders?since": ("/api/v1/orders", {"since": since}),
        "orders page 2 (state)": ("/api/v1/orders", {"state": "FULLY_FILLED", "cursor": cursor}),
        "orders mid-history page": ("/api/v1/orders", {"cursor": mid_cursor}),
        "orders/{id}": (f"/api/v1/orders/{middle}", {}),
        "conflicts": ("/api/v1/conflicts", {}),
        "conflicts?strategy": ("/api/v1/conflicts", {"strategy": "trading"}),
        "conflicts?resolution": ("/api/v1/conflicts", {"resolution": "blocked"}),
        "conflicts/stats": ("/api/v1/conflicts/stats", {}),
        "events": ("/api/v1/events", {}),
        "events?types": ("/api/v1/events", {"types": "order_filled"}),
        "events?ticker": ("/api/v1/events", {"ticker": "T0042"}),
        "ownership": ("/api/v1/ownership", {}),
        "ownership/{t}/history": ("/api/v1/ownership/T0042/history", {}),
        "positions": ("/api/v1/positions", {}),
        "review": ("/api/v1/review", {}),
        "strategies": ("/api/v1/strategies", {}),
    }
    results: dict[str, Any] = {}
    for name, (path, params) in routes.items():
        for _ in range(5):  # warm-up
            http.get(path, params=params).raise_for_status()
        samples = []
        for _ in range(requests):
            began = time.perf_counter()
            response = http.get(path, params=params)
            samples.append(1000 * (time.perf_counter() - began))
            response.raise_for_status()
        results[name] = percentiles(samples)
    http.close()
    return results


# -- streams ----------------------------------------------------------------------------------


def _stream_clients(base: str, token: str, clients: int, out: str, ready: Any,
                    stop: MpEvent) -> None:  # fmt: skip
    """`clients` SSE readers (one thread each): every (event id, receive time) they get."""
    got: list[list[tuple[str, float]]] = [[] for _ in range(clients)]
    connected = threading.Semaphore(0)

    def read(index: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("GET", f"{base}/api/v1/events/stream", headers=headers,
                          params={"types": "risk_alert"}, timeout=60) as response:  # fmt: skip
            connected.release()
            for line in response.iter_lines():
                if line.startswith("id: "):
                    got[index].append((line[4:], time.time()))
                if stop.is_set():
                    return

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for _ in threads:
        connected.acquire()
    ready.set()
    stop.wait()
    time.sleep(0.5)
    Path(out).write_text(json.dumps(got))


def streams(base: str, token: str, database_url: str, redis_url: str, clients: int,
            events: int, interval_s: float, out: Path) -> dict[str, Any]:  # fmt: skip
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_stream_clients, daemon=True,
                       args=(base, token, clients, str(out), ready, stop))  # fmt: skip
    proc.start()
    if not ready.wait(60):
        raise RuntimeError("stream clients did not connect")
    time.sleep(0.5)
    database = Database(database_url, pool_size=2)
    publisher = attach_publisher(database, redis_url, PREFIX)
    began: dict[str, float] = {}
    for i in range(events):
        with database.unit_of_work() as uow:
            event = emit(uow.session, Event(type=EventType.RISK_ALERT, source="bench",
                                            payload={"n": i}))  # fmt: skip
            began[str(event.id)] = time.time()  # the commit starts now (publish is inside it)
            uow.commit()
        time.sleep(interval_s)
    time.sleep(2.0)
    stop.set()
    proc.join(30)
    publisher.flush_marks()
    database.dispose()
    got: list[list[tuple[str, float]]] = json.loads(out.read_text())
    sent = list(began)
    complete = sum(1 for stream in got if [i for i, _ in stream] == sent)
    lags = [1000 * (at - began[i]) for stream in got for i, at in stream if i in began]
    return {
        "clients": clients,
        "events": events,
        "clients_with_every_event_in_order": complete,
        "lag_from_commit_ms": percentiles(lags),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", choices=("auto", "local", "embedded"), default="auto")
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="per list route")
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "bench/results/web.json")
    args = parser.parse_args()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    logs = args.json.parent / "logs"
    logs.mkdir(exist_ok=True)
    services = Services(args.services)
    web: subprocess.Popen[bytes] | None = None
    try:
        services.start()
        url = services.new_database("web")
        upgrade(url)
        database = Database(url, pool_size=1)
        with database.unit_of_work() as uow:
            seed_default_strategies(uow.session)
            token = create_token(uow.session, "bench", "read").token
            uow.commit()
        database.dispose()
        began = time.monotonic()
        seed(url, args.orders)
        print(f"seeded {args.orders} orders in {time.monotonic() - began:.1f}s", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
        env.update(ARBITER_DATABASE_URL=url, ARBITER_REDIS_URL=services.redis_url,
                   ARBITER_EVENT_CHANNEL_PREFIX=PREFIX, PYTHONPATH=str(REPO_ROOT))  # fmt: skip
        port = free_port()
        web = start_web(env, port, logs / "web.log")
        base = f"http://127.0.0.1:{port}"
        result: dict[str, Any] = {"orders": args.orders, "services": services.mode,
                                  "load_avg_at_start": os.getloadavg(),
                                  "cpus": os.cpu_count()}  # fmt: skip
        result["list_routes_ms"] = list_routes(base, token, args.requests)
        for name, figures in result["list_routes_ms"].items():
            print(f"{name:28} p50 {figures['p50']:7.1f}  p99 {figures['p99']:7.1f} ms", flush=True)
        result["stream_lag"] = streams(base, token, url, services.redis_url, 1, args.events,
                                       0.01, logs / "stream-1.json")  # fmt: skip
        print("stream lag, 1 client:", result["stream_lag"], flush=True)
        result["stream_fanout"] = streams(base, token, url, services.redis_url, args.clients,
                                          200, 0.02, logs / "stream-50.json")  # fmt: skip
        print(f"stream fan-out, {args.clients} clients:", result["stream_fanout"], flush=True)
        result["load_avg_at_end"] = os.getloadavg()
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.json}")
    finally:
        if web is not None:
            web.terminate()
            try:
                web.wait(10)
            except subprocess.TimeoutExpired:
                web.kill()
        services.stop()


if __name__ == "__main__":
    main()
