"""Two runs of a maintenance task at once (two beats, or a slow run and the next) do the work
once: each run takes a Redis lock and a run that finds it held is skipped.

The task bodies run in real processes against the run's Postgres, Redis and a simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from adapters.alpaca import AlpacaBrokerage
from core.states import OrderState
from db.engine import Database
from db.models import Fill
from strategy_client import routing
from tasks.maintenance import LOCK_PREFIX, SLOT_PREFIX, exclusive
from tests.fixtures.simulator import Simulator
from tests.integration.test_reconcile import count, order_row, sent_order

pytestmark = pytest.mark.system

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TASK = (
    "import json, sys; from tasks import maintenance; "
    "print(json.dumps(getattr(maintenance, sys.argv[1])()))"
)


def run_task(name: str, env: dict[str, str]) -> Any:
    """Call a task's body in a fresh process (no worker, no eager mode): its return value."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_TASK, name],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def task_env(service_env: dict[str, str], simulator: Simulator, redis_url: str) -> dict[str, str]:
    # Each test starts in a fresh interval: no run of an earlier test holds this one's slot.
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{SLOT_PREFIX}*"):
        client.delete(key)
    return {
        **os.environ,
        **service_env,
        "ARBITER_BROKERAGE_URL": simulator.url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


def test_a_run_that_finds_the_lock_held_is_skipped_and_changes_nothing(
    db: Database,
    simulator: Simulator,
    brokerage: AlpacaBrokerage,
    redis_url: str,
    task_env: dict[str, str],
) -> None:
    built, _ = sent_order(db, brokerage, ticker="AAPL", quantity="3")  # filled at the simulator
    client = redis.Redis.from_url(redis_url)
    other_run = client.lock(LOCK_PREFIX + routing.RECONCILE_ORDERS, timeout=60)
    assert other_run.acquire(blocking=False)
    try:
        assert run_task("reconcile_orders", task_env) == {"skipped": True}
        assert order_row(db, built.id).state == OrderState.ORDER_SENT.value
    finally:
        other_run.release()

    counts = run_task("reconcile_orders", task_env)

    assert counts["fills_applied"] == 1
    assert order_row(db, built.id).state == OrderState.FULLY_FILLED.value


def test_two_concurrent_runs_book_each_fill_once(
    db: Database, brokerage: AlpacaBrokerage, task_env: dict[str, str]
) -> None:
    orders = [sent_order(db, brokerage, ticker=t, quantity="2")[0] for t in ("AAPL", "MSFT")]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_task("reconcile_orders", task_env), range(2)))

    ran = [r for r in results if not r.get("skipped")]
    assert sum(r["fills_applied"] for r in ran) == 2
    for built in orders:
        assert order_row(db, built.id).state == OrderState.FULLY_FILLED.value
        assert count(db, Fill, Fill.order_id == built.id) == 1


def test_while_one_run_holds_the_lock_the_other_is_refused(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    inside, leave = threading.Event(), threading.Event()
    outcomes: list[bool] = []

    def first() -> None:
        with exclusive("test-task", 30, client=client) as held:
            outcomes.append(held)
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    with exclusive("test-task", 30, client=client) as held:
        outcomes.append(held)
    leave.set()
    thread.join(10)
    with exclusive("test-task", 30, client=client) as held:
        outcomes.append(held)

    assert outcomes == [True, False, True]
