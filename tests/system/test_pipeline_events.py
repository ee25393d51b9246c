"""A full pipeline run's events: in history and on pub/sub, in commit order per order."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable

import pytest
import redis
from sqlalchemy import select

from db.engine import Database
from db.models import EventRecord, OrderTransition
from strategy_client.client import SignalClient
from tests.fixtures.keys import db_keys
from tests.fixtures.processes import CeleryProcess
from tests.system.helpers import eventually, wait_terminal

pytestmark = pytest.mark.system


def test_every_transition_of_a_pipeline_run_is_in_history_and_on_pubsub_in_order(
    db: Database,
    redis_url: str,
    broker_url: str,
    event_channel_prefix: str,
    start_worker: Callable[..., CeleryProcess],
) -> None:
    received: list[dict[str, object]] = []
    pubsub = redis.Redis.from_url(redis_url).pubsub()
    pubsub.psubscribe(f"{event_channel_prefix}.*")
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] == "pmessage":
                received.append(json.loads(message["data"]))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    eventually(lambda: pubsub.subscribed)
    start_worker()
    client = SignalClient(redis_url, broker_url, keys=db_keys(db))
    coids = [
        client.submit_signal("long_term", "AAPL", "buy", 10, signal_id="ev-1"),
        client.submit_signal("trading", "AAPL", "sell", 5, signal_id="ev-2"),  # blocked
        client.submit_signal("trading", "AMD", "buy", 3, signal_id="ev-3"),
    ]
    orders = wait_terminal(db, coids)
    with db.unit_of_work() as uow:
        history = list(uow.session.scalars(select(EventRecord).order_by(EventRecord.seq)))
        transitions = list(uow.session.scalars(select(OrderTransition)))
    eventually(lambda: len({e["id"] for e in received}) >= len(history), timeout=30)
    stop.set()
    listener.join(5)

    # Every transition that announces itself has its event in history.
    per_order: dict[int, list[str]] = defaultdict(list)
    for record in history:
        if record.order_id is not None:
            per_order[record.order_id].append(record.type)
    for order in orders:
        moves = [t.to_state for t in transitions if t.order_id == order.id]
        assert moves[0] == "SIGNAL_RECEIVED" and moves[-1] == order.state
        assert per_order[order.id][0] == "signal_received"
    # Pub/sub carried each stored event, and per order in the order they were committed.
    assert {str(r.id) for r in history} == {str(e["id"]) for e in received}
    live: dict[int, list[str]] = defaultdict(list)
    seen: set[object] = set()
    for envelope in received:
        if envelope["id"] in seen or envelope.get("order_id") is None:
            continue
        seen.add(envelope["id"])
        live[int(envelope["order_id"])].append(str(envelope["type"]))  # type: ignore[call-overload]
    assert {k: v for k, v in live.items()} == {k: v for k, v in per_order.items()}
