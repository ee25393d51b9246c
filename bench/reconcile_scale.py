"""Reconciliation at scale: one pass of `reconcile_open_orders` over N open orders.

The simulator's orders are written straight into its own storage (brokersim.store.Store,
before it starts): far-from-price GTC buy limits with no fill due, so its engine leaves them
alone. Their Arbiter twins are bulk-inserted in ORDER_SENT into a database of their own.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import insert, select

from adapters.alpaca import AlpacaBrokerage
from bench.load import STRATEGY, TICKERS
from brokersim.ledger import fmt_ts
from brokersim.store import Store
from db.engine import Database
from db.migrate import upgrade
from db.models import Order, Strategy
from db.seed import seed_default_strategies
from service_layer.reconciliation import reconcile_open_orders
from tests.fixtures.simulator import Simulator

LIMIT_PRICE = Decimal("1")  # simulator prices start at 20.00: never crossed


def _orders(n: int) -> list[dict[str, Any]]:
    base = datetime.now(UTC) - timedelta(minutes=5)
    return [{"id": str(uuid.uuid4()), "coid": f"arb-bench-recon-{i}",
             "symbol": TICKERS[i % len(TICKERS)], "at": fmt_ts(base + timedelta(microseconds=i))}
            for i in range(n)]


def _fill_simulator(data_dir: Path, orders: list[dict[str, Any]]) -> None:
    store = Store(data_dir, Decimal("1000000"))
    try:
        with store.transaction() as db:
            db.executemany(
                "INSERT INTO orders (id, client_order_id, symbol, side, type, time_in_force, qty,"
                " limit_price, extended_hours, status, filled_qty, submitted_at, updated_at,"
                " expires_at, next_fill_at) VALUES (?, ?, ?, 'buy', 'limit', 'gtc', '1', ?, 0,"
                " 'new', '0', ?, ?, NULL, NULL)",
                [(o["id"], o["coid"], o["symbol"], str(LIMIT_PRICE), o["at"], o["at"])
                 for o in orders])
    finally:
        store.close()


def _fill_database(database: Database, orders: list[dict[str, Any]]) -> None:
    with database.unit_of_work() as uow:
        seed_default_strategies(uow.session)
        strategy_id = uow.session.scalar(select(Strategy.id).where(Strategy.name == STRATEGY))
        uow.session.execute(insert(Order), [
            {"client_order_id": o["coid"], "brokerage_order_id": o["id"],
             "strategy_id": strategy_id, "strategy_name": STRATEGY,
             "signal_id": o["coid"], "ticker": o["symbol"], "side": "buy",
             "quantity": Decimal(1), "order_type": "limit", "limit_price": LIMIT_PRICE,
             "time_in_force": "gtc", "state": "ORDER_SENT", "submit_attempts": 1,
             "last_submit_at": datetime.now(UTC)} for o in orders])
        uow.commit()


def reconcile_at_scale(database_url: str, work_dir: Path, n: int) -> dict[str, Any]:
    orders = _orders(n)
    sim_dir = work_dir / "brokersim-reconcile"
    began = time.monotonic()
    _fill_simulator(sim_dir, orders)
    upgrade(database_url)
    database = Database(database_url)
    sim = Simulator(sim_dir, {"fill_latency_ms": 0, "partial_slices": 1, "tick_ms": 1000})
    try:
        _fill_database(database, orders)
        setup_s = time.monotonic() - began
        sim.start()
        brokerage = AlpacaBrokerage(sim.url, sim.key, sim.secret, timeout_s=60)
        sim_proc = psutil.Process(sim.proc.pid) if sim.proc else None
        sim_cpu0 = sum(sim_proc.cpu_times()[:2]) if sim_proc else 0.0
        own_cpu0 = sum(psutil.Process().cpu_times()[:2])
        t0 = time.monotonic()
        report = reconcile_open_orders(database, brokerage, never_received_grace_s=3600)
        seconds = time.monotonic() - t0
        return {
            "open_orders": n,
            "seconds": round(seconds, 2),
            "brokerage_calls": brokerage.calls,
            "report": report.counts(),
            "cpu_s": {"reconciler (bench process)":
                      round(sum(psutil.Process().cpu_times()[:2]) - own_cpu0, 2),
                      "simulator": round(sum(sim_proc.cpu_times()[:2]) - sim_cpu0, 2)
                      if sim_proc else None},
            "setup_s": round(setup_s, 1),
        }
    finally:
        sim.close()
        database.dispose()
