"""Event retention on real Postgres: old published history goes in bounded batches, an event
the relay still owes is never deleted, by the beat's task and by `arbiter events purge`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from beat_schedule import beat_schedule
from core.errors import InvalidInput
from core.event_payloads import OrderTransitioned
from core.events import Event, EventType
from core.settings import Settings, get_settings
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.event_history import count_purgeable, purge_cutoff, purge_history
from db.models import EventRecord
from db.outbox import emit
from strategy_client import routing
from tasks.maintenance import SLOT_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[2]


def add_events(db: Database, days_ago: float, count: int, *, published: bool) -> set[str]:
    """`count` events that occurred `days_ago` days ago, published or still owed."""
    occurred = datetime.now(UTC) - timedelta(days=days_ago)
    sent = OrderTransitioned(from_state=OrderState.ORDER_PENDING, to_state=OrderState.ORDER_SENT,
                             reason="accepted", filled_quantity=Decimal(0), avg_fill_price=None,
                             cause=TransitionCause.BROKERAGE_REPORT)  # fmt: skip
    events = [Event.of(EventType.ORDER_SENT, sent, order_id=1, strategy="trading",
                       ticker="AAPL", occurred_at=occurred) for _ in range(count)]  # fmt: skip
    with db.unit_of_work() as uow:
        for item in events:
            emit(uow.session, item)
        uow.commit()
    ids = [item.id for item in events]
    if published:
        with db.unit_of_work() as uow:
            uow.session.execute(update(EventRecord).where(EventRecord.id.in_(ids))
                                .values(published_at=func.now()))
            uow.commit()
    return {str(i) for i in ids}


def stored_ids(db: Database) -> set[str]:
    with db.sessions() as session:
        return {str(i) for i in session.scalars(select(EventRecord.id))}


@pytest.fixture
def history(db: Database) -> dict[str, set[str]]:
    return {
        "old_published": add_events(db, 100, 7, published=True),
        "old_owed": add_events(db, 400, 2, published=False),
        "recent_published": add_events(db, 10, 3, published=True),
    }


def test_purge_deletes_old_published_events_in_batches_and_keeps_owed_ones(
        db: Database, history: dict[str, set[str]]) -> None:
    report = purge_history(db, timedelta(days=90), batch_size=3)
    assert (report.deleted, report.batches, report.more) == (7, 3, False)  # 3 + 3 + 1
    assert stored_ids(db) == history["old_owed"] | history["recent_published"]
    # Nothing left to delete: a second purge deletes nothing, in one batch.
    assert purge_history(db, timedelta(days=90), batch_size=3).deleted == 0


def test_one_purge_stops_after_its_batch_budget_and_says_there_is_more(
        db: Database, history: dict[str, set[str]]) -> None:
    first = purge_history(db, timedelta(days=90), batch_size=2, max_batches=2)
    assert (first.deleted, first.batches, first.more) == (4, 2, True)
    rest = purge_history(db, timedelta(days=90), batch_size=2)
    assert (rest.deleted, rest.more) == (3, False)
    assert history["old_owed"] <= stored_ids(db)


def test_the_cutoff_is_the_databases_clock_and_must_be_positive(db: Database) -> None:
    with db.sessions() as session:
        db_now = session.scalar(select(func.now()))
        cutoff = purge_cutoff(session, timedelta(days=90))
        assert db_now is not None and cutoff == db_now - timedelta(days=90)
        assert count_purgeable(session, cutoff) == 0
        for bad in (timedelta(0), timedelta(days=-1)):
            with pytest.raises(InvalidInput, match="positive"):
                purge_cutoff(session, bad)


def test_the_beat_runs_the_retention_task_on_its_interval() -> None:
    schedule = beat_schedule(Settings(purge_events_interval_s=1800))
    entry = schedule["purge-old-events"]
    assert entry["task"] == routing.PURGE_EVENTS and entry["schedule"] == 1800
    assert routing.TASK_ROUTES[routing.PURGE_EVENTS]["queue"] == routing.MAINTENANCE_QUEUE


def run_purge_task(env: dict[str, str]) -> Any:
    """The task's body in a fresh process (no worker, no eager mode): its return value."""
    code = ("import json; from tasks import maintenance; "
            "print(json.dumps(maintenance.purge_events()))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.system
def test_the_retention_task_deletes_by_the_configured_days_and_zero_keeps_all(
        db: Database, history: dict[str, set[str]], service_env: dict[str, str],
        redis_url: str) -> None:
    env = {**os.environ, **service_env,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    slots = redis.Redis.from_url(redis_url)

    def fresh_interval() -> None:
        for key in slots.scan_iter(f"{SLOT_PREFIX}*"):
            slots.delete(key)

    fresh_interval()
    kept = run_purge_task({**env, "ARBITER_EVENT_RETENTION_DAYS": "0"})
    assert kept["skipped"] is True and len(stored_ids(db)) == 12

    fresh_interval()
    done = run_purge_task({**env, "ARBITER_EVENT_RETENTION_DAYS": "5"})
    assert (done["deleted"], done["more"]) == (10, False)  # 7 old + 3 recent, all published
    assert stored_ids(db) == history["old_owed"]


@pytest.fixture
def cli(service_env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    from arbiter.commands.events import app

    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> Any:
        get_settings.cache_clear()
        return runner.invoke(app, ["purge", *args], env=service_env, input=stdin)

    yield invoke
    get_settings.cache_clear()


def test_events_purge_asks_with_the_count_then_deletes(
        db: Database, history: dict[str, set[str]], cli: Callable[..., Any]) -> None:
    refused = cli("--older-than", "90d", stdin="n\n")
    assert refused.exit_code == 1 and "Delete 7 published events" in refused.output
    assert len(stored_ids(db)) == 12

    agreed = cli("--older-than", "90d", stdin="y\n")
    assert agreed.exit_code == 0, agreed.output
    assert "deleted 7 events" in agreed.output
    assert stored_ids(db) == history["old_owed"] | history["recent_published"]


def test_events_purge_json_with_yes_and_bad_ages(
        db: Database, history: dict[str, set[str]], cli: Callable[..., Any]) -> None:
    result = cli("--older-than", "1w", "--yes", "--json", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["deleted"], report["batches"], report["more"]) == (10, 6, False)
    assert stored_ids(db) == history["old_owed"]
    for bad in ("90", "0d", "-3d", "ninety days"):
        result = cli("--older-than", bad, "--yes")
        assert result.exit_code == 2 and "positive age" in result.output, (bad, result.output)
