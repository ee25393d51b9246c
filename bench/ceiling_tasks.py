"""The raw-infrastructure ceiling: a plain Celery chain of 4 tasks, each one small Postgres
transaction (a primary-key UPDATE), with Arbiter's own Celery settings on the same Redis.

    celery -A bench.ceiling_tasks worker -c 2 -Q signals,orders

Steps 1-3 go to `signals` and step 4 to `orders`, as Arbiter routes intake/validate/conflict
and submit. Step 4 stamps `done_at` (clock_timestamp()), the counterpart of the ORDER_SENT
transition's `created_at`. One psycopg connection per worker process, opened after fork.

With BENCH_CEILING_BROKERAGE=1 the chain also makes Arbiter's two brokerage calls, through the
same adapters: step 2 asks the simulator for a reference price (as validation does for a market
order) and step 4 submits a market buy of 1 share (as submission does). Its rate is then the
most Arbiter could reach with no work of its own besides those calls (`--ceiling-brokerage`).
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cache

import psycopg
from celery import Celery

from arbiter.embedded import libpq_url
from bootstrap import Runtime, bootstrap
from core.brokerage import OrderRequest, Side
from core.settings import get_settings
from strategy_client.routing import ORDERS_QUEUE, SIGNALS_QUEUE
from tasks.app import celery_config

STEPS = ("bench.ceiling.step1", "bench.ceiling.step2", "bench.ceiling.step3",
         "bench.ceiling.step4")
ROUTES = {name: {"queue": SIGNALS_QUEUE} for name in STEPS[:3]} | {
    STEPS[3]: {"queue": ORDERS_QUEUE}
}
TABLE_DDL = ("CREATE TABLE IF NOT EXISTS bench_ceiling "
             "(id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, done_at timestamptz)")

_UPDATE = "UPDATE bench_ceiling SET n = n + 1 WHERE id = %s"
_UPDATE_LAST = "UPDATE bench_ceiling SET n = n + 1, done_at = clock_timestamp() WHERE id = %s"
WITH_BROKERAGE = os.environ.get("BENCH_CEILING_BROKERAGE") == "1"


def create_app() -> Celery:
    config = celery_config(get_settings())  # the very settings Arbiter's workers run with
    config["task_routes"] = ROUTES
    celery = Celery("bench-ceiling")
    celery.config_from_object(config)
    return celery


app = create_app()
_conn: tuple[int, psycopg.Connection] | None = None


def _connection() -> psycopg.Connection:
    global _conn
    if _conn is None or _conn[0] != os.getpid() or _conn[1].closed:
        url = get_settings().database_url
        if not url:
            raise RuntimeError("ARBITER_DATABASE_URL is not set")
        _conn = (os.getpid(), psycopg.connect(libpq_url(url)))
    return _conn[1]


def _update(row_id: int, statement: str) -> int:
    conn = _connection()
    with conn.transaction():
        conn.execute(statement, (row_id,))
    return row_id


@app.task(name=STEPS[0])
def step1(row_id: int) -> int:
    return _update(row_id, _UPDATE)


@cache
def _runtime() -> Runtime:
    return bootstrap(get_settings())


def _ticker(row_id: int) -> str:
    return f"CB{row_id % 1000:03d}"  # 1,000 tickers, as Arbiter's signals


@app.task(name=STEPS[1])
def step2(row_id: int) -> int:
    if WITH_BROKERAGE:
        _runtime().reference_prices.price(_ticker(row_id))
    return _update(row_id, _UPDATE)


@app.task(name=STEPS[2])
def step3(row_id: int) -> int:
    return _update(row_id, _UPDATE)


@app.task(name=STEPS[3])
def step4(row_id: int) -> int:
    if WITH_BROKERAGE:
        _runtime().brokerage.submit(OrderRequest(
            client_order_id=f"ceiling-{os.getpid()}-{row_id}-{os.urandom(4).hex()}",
            symbol=_ticker(row_id), side=Side.BUY, quantity=Decimal(1)))
    return _update(row_id, _UPDATE_LAST)
