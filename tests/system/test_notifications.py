"""Notifications with real worker, notifier, beat and simulator processes: a blocked conflict
reaches the webhook once with its reasoning, even when the notifier is killed mid-delivery; a
dead target never holds up a signal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from db import notifications as store
from db.engine import Database
from db.models import NotificationDelivery
from strategy_client.client import SignalClient
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.receiver import Receiver
from tests.system.helpers import eventually, wait_terminal

pytestmark = pytest.mark.system

FAST_NOTIFY = {"ARBITER_NOTIFY_TIMEOUT_S": "1", "ARBITER_NOTIFY_MAX_RETRIES": "2"}


def _rule(db: Database, events: list[str], url: str) -> None:
    with db.unit_of_work() as uow:
        store.add_rule(uow.session, events, url)
        uow.commit()


def _deliveries(db: Database) -> list[NotificationDelivery]:
    with db.sessions() as session:
        return list(session.scalars(select(NotificationDelivery).order_by(NotificationDelivery.id)))


def _blocked_scenario(db: Database, client: SignalClient) -> None:
    owner = client.submit_signal("long_term", "NVDA", "buy", 20, signal_id="lt-nvda")
    wait_terminal(db, [owner])
    blocked = client.submit_signal("trading", "NVDA", "sell", 10, signal_id="tr-nvda")
    (order,) = wait_terminal(db, [blocked])
    assert order.state == "REJECTED"


def test_a_blocked_conflict_reaches_the_webhook_once_across_a_notifier_crash(
    db: Database,
    client: SignalClient,
    receiver: Receiver,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    tmp_path: Path,
) -> None:
    _rule(db, ["order_blocked_by_conflict"], receiver.url)
    start_worker()
    notifier = start_worker(
        "notifier",
        concurrency=1,
        queues="notifications",
        extra_env={
            **FAST_NOTIFY,
            # The pool process dies once, after the delivery is marked `sending`.
            "ARBITER_CRASH_POINTS": "notify_before_send",
            "ARBITER_CRASH_STATE_DIR": tmp_path,
        },
    )
    start_beat()
    _blocked_scenario(db, client)

    eventually(lambda: (tmp_path / "notify_before_send.fired").exists(), timeout=60)
    eventually(lambda: len(receiver.messages) == 1, timeout=90)
    [body] = receiver.bodies()
    assert body.startswith("trading's sell of 10 NVDA was blocked: long_term (priority 100) owns")
    assert "locked until" in body and "Reasoning:" in body
    [delivery] = _deliveries(db)
    assert delivery.status == "sent" and delivery.attempts == 2
    assert notifier.proc is not None and notifier.proc.poll() is None  # the worker lives on
    # Later passes of the dispatcher add nothing and send nothing again.
    eventually(lambda: len(_deliveries(db)) == 1 and len(receiver.messages) == 1, timeout=5)


def test_a_dead_target_is_retried_and_never_delays_a_signal(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
) -> None:
    _rule(db, ["ownership_acquired", "order_blocked_by_conflict"], "json://127.0.0.1:9/dead")
    start_worker()
    start_worker(
        "notifier",
        concurrency=1,
        queues="notifications",
        extra_env={**FAST_NOTIFY, "ARBITER_NOTIFY_DIGEST_AFTER": "100"},
    )
    start_beat()
    coids = [
        client.submit_signal("trading", f"DD{i}", "buy", 1, signal_id=f"dead-{i}") for i in range(6)
    ]
    orders = wait_terminal(db, coids)
    # Every signal settled while the notifications were still being retried.
    assert {o.state for o in orders} == {"FULLY_FILLED"}
    assert all(d.status != "failed" for d in _deliveries(db))
    eventually(
        lambda: [(d.status, d.attempts) for d in _deliveries(db)] == [("failed", 3)] * 6,
        timeout=90,
    )
    assert all("/dead" not in (d.last_error or "") for d in _deliveries(db))
