"""The event bus against real Postgres and Redis: outbox, publish after commit, relay, history,
external producers, subscribers with catch-up, and the `arbiter events` CLI."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from core.brokerage import Side
from core.conflicts import Resolution
from core.errors import InvalidInput
from core.event_payloads import ConflictDecided, EventPayload, OrderTransitioned, PositionChanged
from core.events import Event, EventType, channel_for
from core.settings import get_settings
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.event_history import events_after, list_events, purge_older_than
from db.models import EventRecord
from db.outbox import emit, write_pending
from db.publisher import EventPublisher, relay_unpublished
from strategy_client.external_events import publish_external
from strategy_client.subscriber import EventSubscriber

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 15.0
Bus = tuple[Database, EventPublisher]


# --- helpers --------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = WAIT_S, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def sample_payload(type_: EventType) -> EventPayload:
    """A valid payload of `type_` (the outbox refuses any other)."""
    if type_ is EventType.CONFLICT_DETECTED:
        return ConflictDecided(
            ticker="AAPL", requesting_strategy_id=2, requesting_strategy_name="meanrev",
            requesting_priority=50, owning_strategy_id=1, owning_strategy_name="momentum",
            owning_priority=100, action=Side.BUY, resolution=Resolution.BLOCKED,
            reasoning="momentum holds AAPL locked")
    if type_ is EventType.POSITION_UPDATED:
        return PositionChanged(
            side=Side.BUY, fill_quantity=Decimal(5), fill_price=Decimal(10),
            quantity=Decimal(10), avg_cost=Decimal(10), realized_pnl=Decimal(0))
    target = {EventType.ORDER_SENT: OrderState.ORDER_SENT,
              EventType.ORDER_PARTIALLY_FILLED: OrderState.PARTIAL_FILLED,
              EventType.ORDER_FILLED: OrderState.FULLY_FILLED,
              EventType.ORDER_CANCELLED: OrderState.CANCELLED}[type_]
    return OrderTransitioned(from_state=OrderState.ORDER_SENT, to_state=target, reason=None,
                             filled_quantity=Decimal(0), avg_fill_price=None,
                             cause=TransitionCause.BROKERAGE_REPORT)


def event(type_: EventType = EventType.ORDER_SENT, **fields: Any) -> Event:
    fields.setdefault("order_id", 1)
    fields.setdefault("strategy", "momentum")
    fields.setdefault("ticker", "AAPL")
    fields.setdefault("payload", sample_payload(type_).to_wire())
    return Event(type=type_, **fields)


def commit(database: Database, *events: Event) -> list[Event]:
    with database.unit_of_work() as uow:
        for item in events:
            emit(uow.session, item)
        uow.commit()
    return list(events)


def stored(database: Database) -> list[EventRecord]:
    with database.sessions() as session:
        return list(session.scalars(select(EventRecord).order_by(EventRecord.seq)))


def unpublished_count(database: Database) -> int:
    with database.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(EventRecord)
                                  .where(EventRecord.published_at.is_(None))) or 0)


class Listener:
    """A plain redis-py subscriber, confirmed subscribed before the test goes on."""

    def __init__(self, url: str, pattern: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(pattern)
        wait_for(lambda: (m := self.pubsub.get_message(timeout=0.1)) is not None
                 and m["type"] == "psubscribe", what="psubscribe confirmation")

    def collect(self, count: int, timeout: float = WAIT_S) -> list[tuple[str, Event]]:
        received: list[tuple[str, Event]] = []
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "pmessage":
                received.append((message["channel"].decode(), Event.from_json(message["data"])))
        return received

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def listen() -> Iterator[Callable[[str, str], Listener]]:
    opened: list[Listener] = []

    def open_listener(url: str, pattern: str) -> Listener:
        opened.append(Listener(url, pattern))
        return opened[-1]

    yield open_listener
    for listener in opened:
        listener.close()


@pytest.fixture
def make_bus(db: Database, migrated_database_url: str,
             event_channel_prefix: str) -> Iterator[Callable[[str], Bus]]:
    """(database, publisher) wired together on a clean database, publishing to a Redis URL."""
    made: list[Database] = []

    def build(redis_url: str) -> Bus:
        publisher = EventPublisher(redis_url, event_channel_prefix, pause_after_failure_s=0)
        database = Database(migrated_database_url, after_commit=publisher.after_commit)
        publisher.database = database
        made.append(database)
        return database, publisher

    yield build
    for database in made:
        database.dispose()


@pytest.fixture
def bus(make_bus: Callable[[str], Bus],
        redis_url: str) -> Bus:
    return make_bus(redis_url)


@pytest.fixture
def subscribers() -> Iterator[list[Any]]:
    threads: list[Any] = []
    yield threads
    for thread in threads:
        thread.stop()


# --- publishing -----------------------------------------------------------------------------


def test_committed_events_are_in_history_and_on_pubsub_in_commit_order(
        bus: Bus, redis_url: str, event_channel_prefix: str,
        listen: Callable[[str, str], Listener]) -> None:
    database, _ = bus
    listener = listen(redis_url, f"{event_channel_prefix}.*")
    sent = commit(database, event(EventType.ORDER_SENT, order_id=7))
    sent += commit(database, event(EventType.ORDER_SENT, order_id=8))
    sent += commit(database, event(EventType.ORDER_PARTIALLY_FILLED, order_id=7),
                   event(EventType.POSITION_UPDATED, order_id=7))
    sent += commit(database, event(EventType.ORDER_FILLED, order_id=7))

    received = listener.collect(len(sent))
    assert [e for _, e in received] == sent
    assert [channel for channel, _ in received] == [channel_for(e.type, event_channel_prefix)
                                                    for e in sent]
    assert [e.type for _, e in received if e.order_id == 7] == [
        EventType.ORDER_SENT, EventType.ORDER_PARTIALLY_FILLED, EventType.POSITION_UPDATED,
        EventType.ORDER_FILLED]
    rows = stored(database)
    assert [row.id for row in rows] == [e.id for e in sent]
    # Marks are written in batches by the publisher's background thread, within moments.
    wait_for(lambda: unpublished_count(database) == 0)


def test_relay_publishes_what_a_stopped_redis_missed_exactly_once_in_history(
        make_bus: Callable[[str], Bus], own_redis: Any,
        event_channel_prefix: str, listen: Callable[[str, str], Listener]) -> None:
    database, publisher = make_bus(own_redis.url)
    own_redis.stop()
    sent = [commit(database, event(order_id=n))[0] for n in range(1, 26)]  # publishing fails
    assert unpublished_count(database) == len(sent)

    own_redis.start()
    listener = listen(own_redis.url, f"{event_channel_prefix}.*")
    assert relay_unpublished(database, publisher, batch=10) == len(sent)
    received = [e for _, e in listener.collect(len(sent))]
    assert [e.id for e in received] == [e.id for e in sent]
    assert unpublished_count(database) == 0
    assert len(stored(database)) == len(sent)
    assert relay_unpublished(database, publisher) == 0
    assert listener.collect(1, timeout=0.3) == []


def test_two_relays_at_once_split_the_work_and_publish_each_event_once(
        make_bus: Callable[[str], Bus], own_redis: Any, event_channel_prefix: str,
        listen: Callable[[str, str], Listener]) -> None:
    database, publisher = make_bus(own_redis.url)
    own_redis.stop()
    commit(database, *[event(order_id=n) for n in range(1, 201)])
    own_redis.start()
    listener = listen(own_redis.url, f"{event_channel_prefix}.*")
    counts: list[int] = []
    relays = [threading.Thread(target=lambda: counts.append(
        relay_unpublished(database, publisher, batch=20))) for _ in range(2)]
    for relay in relays:
        relay.start()
    for relay in relays:
        relay.join(WAIT_S)
    assert sum(counts) == 200
    received = [e.id for _, e in listener.collect(200)]
    assert len(received) == len(set(received)) == 200
    assert unpublished_count(database) == 0


def test_event_of_a_process_killed_between_commit_and_publish_is_published_by_the_relay(
        bus: Bus, migrated_database_url: str, redis_url: str,
        event_channel_prefix: str, listen: Callable[[str, str], Listener]) -> None:
    database, publisher = bus
    listener = listen(redis_url, f"{event_channel_prefix}.*")
    script = (
        "import os, signal, sys\n"
        "from core.events import Event, EventType\n"
        "from db.engine import Database\n"
        "from db.outbox import emit\n"
        "def crash(events):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "database = Database(sys.argv[1], after_commit=crash)\n"
        "with database.unit_of_work() as uow:\n"
        "    event = emit(uow.session, Event(type=EventType.RISK_ALERT, order_id=42))\n"
        "    print(event.id, flush=True)\n"
        "    uow.commit()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, migrated_database_url], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == -signal.SIGKILL, done.stderr
    crashed_id = uuid.UUID(done.stdout.strip())
    assert [row.id for row in stored(database)] == [crashed_id]
    assert unpublished_count(database) == 1

    assert relay_unpublished(database, publisher) == 1
    assert [e.id for _, e in listener.collect(1)] == [crashed_id]
    assert unpublished_count(database) == 0


def test_plain_redis_cli_subscriber_sees_the_json_envelope(
        bus: Bus, redis_url: str, event_channel_prefix: str) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    database, _ = bus
    channel = f"{event_channel_prefix}.order_filled"
    proc = subprocess.Popen(["redis-cli", "-u", redis_url, "SUBSCRIBE", channel],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in proc.stdout or []],
                     daemon=True).start()
    try:
        seen: list[str] = []

        def next_line() -> str:
            seen.append(lines.get(timeout=WAIT_S))
            return seen[-1]

        while next_line() != channel:  # "subscribe", channel, 1
            pass
        next_line()
        filled = commit(database, event(EventType.ORDER_FILLED, order_id=9))[0]
        while not next_line().startswith("{"):
            pass
        envelope = json.loads(seen[-1])
        assert envelope["id"] == str(filled.id)
        assert envelope["type"] == "order_filled"
        assert envelope["payload"] == filled.payload
        assert Event.model_validate(envelope).data() == filled.data()
        assert set(envelope) >= {"occurred_at", "source", "order_id", "strategy", "ticker",
                                 "schema_version"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- external producers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "kwargs", "message"),
    [
        ("no_such_event", {}, "unknown event type 'no_such_event'; other processes may publish: "),
        ("order_filled", {}, "published by Arbiter itself; other processes may publish: "),
        ("debate_started", {"payload": [1, 2]}, "payload must be a JSON object, not list"),
        ("debate_started", {"payload": "text"}, "payload must be a JSON object, not str"),
        ("debate_started", {"payload": {"at": object()}}, "payload.at is a object"),
        ("debate_started", {"payload": {"x": float("nan")}}, "JSON cannot carry"),
        ("debate_started", {"payload": {"blob": "x" * 70_000}}, "at most 65536 allowed"),
        ("debate_started", {"source": ""}, "source must be a non-empty string"),
        ("debate_started", {"source": "s" * 49}, "at most 48 printable characters"),
        ("debate_started", {"source": 7}, "source must be a non-empty string"),
    ],
)
def test_external_producer_refusals_are_clear_and_store_nothing(
        bus: Bus, type_: str, kwargs: dict[str, Any],
        message: str) -> None:
    database, publisher = bus
    arguments: dict[str, Any] = {"source": "war-room", "payload": {"topic": "NVDA"}, **kwargs}
    with pytest.raises(InvalidInput) as raised:
        publish_external(database, publisher, type_, **arguments)
    assert message in str(raised.value)
    if "unknown" in message:
        assert "debate_started" in str(raised.value)
    assert stored(database) == []


def test_external_debate_started_lands_in_history_and_on_pubsub(
        bus: Bus, redis_url: str, event_channel_prefix: str,
        listen: Callable[[str, str], Listener]) -> None:
    database, _ = bus
    publisher = EventPublisher(redis_url, event_channel_prefix)  # marks rows in `database`
    listener = listen(redis_url, f"{event_channel_prefix}.debate_started")
    published = publish_external(database, publisher, "DEBATE_STARTED", source="war-room",
                                 payload={"topic": "NVDA earnings", "agents": ["bull", "bear"]},
                                 ticker="NVDA")
    assert [e for _, e in listener.collect(1)] == [published]
    [row] = stored(database)
    assert (row.id, row.type, row.source, row.ticker) == (
        published.id, "debate_started", "external:war-room", "NVDA")
    publisher.flush_marks()
    assert unpublished_count(database) == 0


# --- subscribers ----------------------------------------------------------------------------


def test_a_failing_handler_does_not_stop_the_others(
        bus: Bus, redis_url: str, migrated_database_url: str,
        event_channel_prefix: str, subscribers: list[Any]) -> None:
    database, _ = bus
    failed: list[Event] = []
    fills: list[Event] = []
    everything: list[Event] = []

    def broken(item: Event) -> None:
        failed.append(item)
        raise RuntimeError("handler bug")

    subscriber = EventSubscriber(redis_url, migrated_database_url, event_channel_prefix)
    subscriber.on(None, broken).on(EventType.ORDER_FILLED, fills.append).on(
        [EventType.ORDER_SENT, "order_filled"], everything.append)
    subscribers.append(thread := subscriber.run_in_thread())
    assert thread.wait_ready()

    sent = commit(database, event(EventType.ORDER_SENT), event(EventType.ORDER_FILLED))
    sent += commit(database, event(EventType.ORDER_SENT, order_id=2),
                   event(EventType.ORDER_CANCELLED, order_id=2))
    wait_for(lambda: len(failed) == 4 and len(everything) == 3, what="all deliveries")
    assert failed == sent
    assert fills == [sent[1]]
    assert everything == sent[:3]
    assert thread.is_alive()


def test_subscriber_that_was_away_receives_exactly_what_it_missed_then_live_events(
        bus: Bus, redis_url: str, migrated_database_url: str,
        event_channel_prefix: str, subscribers: list[Any]) -> None:
    database, _ = bus
    first: list[Event] = []
    subscriber = EventSubscriber(redis_url, migrated_database_url, event_channel_prefix)
    thread = subscriber.on([EventType.ORDER_SENT, EventType.ORDER_FILLED], first.append) \
        .run_in_thread()
    assert thread.wait_ready()
    seen = [commit(database, event(order_id=n))[0] for n in range(3)]
    wait_for(lambda: len(first) == 3, what="first three")
    thread.stop()
    assert first == seen
    last_seen = subscriber.last_event_id
    assert last_seen == seen[-1].id

    missed = [commit(database, event(EventType.ORDER_FILLED, order_id=n))[0] for n in range(5)]
    commit(database, event(EventType.ORDER_CANCELLED))  # a type it did not ask for

    second: list[Event] = []
    again = EventSubscriber(redis_url, migrated_database_url, event_channel_prefix)
    subscribers.append(thread := again.on(["order_sent", "order_filled"], second.append)
                       .run_in_thread(last_seen_id=last_seen))
    assert thread.wait_ready()
    assert second == missed
    live = [commit(database, event(order_id=n))[0] for n in range(2)]
    wait_for(lambda: len(second) == 7, what="live events after catch-up")
    assert second == missed + live
    assert again.last_event_id == live[-1].id


def test_subscriber_catches_up_after_redis_restarts_including_a_late_committer(
        make_bus: Callable[[str], Bus], own_redis: Any,
        migrated_database_url: str, event_channel_prefix: str, subscribers: list[Any]) -> None:
    database, _ = make_bus(own_redis.url)
    received: list[Event] = []
    subscriber = EventSubscriber(own_redis.url, migrated_database_url, event_channel_prefix,
                                 backoff_initial_s=0.05, backoff_max_s=0.3)
    subscribers.append(thread := subscriber.on(None, received.append).run_in_thread())
    assert thread.wait_ready()

    # A transaction takes a lower seq, then commits after a later one was delivered.
    with database.unit_of_work() as slow:
        late = emit(slow.session, event(EventType.ORDER_SENT, order_id=100))
        write_pending(slow.session)  # the row goes in now, taking its seq; the commit waits
        early = commit(database, event(EventType.ORDER_SENT, order_id=101))[0]
        wait_for(lambda: received == [early], what="the early event, live")

        own_redis.kill()
        wait_for(lambda: subscriber.reconnects >= 1, what="the subscriber to notice")
        during = commit(database, event(EventType.ORDER_FILLED, order_id=101))[0]
        slow.commit()
    own_redis.start()
    wait_for(lambda: len(received) == 3, what="catch-up after the restart")
    assert received == [early, late, during]  # history order: `late` holds the lower seq

    after = commit(database, event(EventType.ORDER_CANCELLED, order_id=101))[0]
    wait_for(lambda: len(received) == 4, what="live again")
    assert received == [early, late, during, after]


# --- history --------------------------------------------------------------------------------


def test_history_queries_filter_by_type_order_strategy_ticker_and_time(db: Database) -> None:
    now = datetime.now(UTC)
    a = event(EventType.ORDER_SENT, order_id=1, strategy="momentum", ticker="AAPL",
              occurred_at=now - timedelta(hours=3))
    b = event(EventType.ORDER_FILLED, order_id=1, strategy="momentum", ticker="AAPL",
              occurred_at=now - timedelta(hours=2))
    c = event(EventType.ORDER_SENT, order_id=2, strategy="meanrev", ticker="MSFT",
              occurred_at=now - timedelta(minutes=30))
    d = event(EventType.CONFLICT_DETECTED, order_id=None, strategy="meanrev", ticker="AAPL",
              occurred_at=now - timedelta(minutes=5))
    commit(db, a, b, c, d)

    with db.sessions() as session:
        def ids(**filters: Any) -> list[uuid.UUID]:
            return [row.id for row in list_events(session, **filters)]

        assert ids() == [a.id, b.id, c.id, d.id]
        assert ids(types=["order_sent"]) == [a.id, c.id]
        assert ids(types=[EventType.ORDER_FILLED, EventType.CONFLICT_DETECTED]) == [b.id, d.id]
        assert ids(order_id=1) == [a.id, b.id]
        assert ids(strategy="meanrev") == [c.id, d.id]
        assert ids(ticker="AAPL") == [a.id, b.id, d.id]
        assert ids(since=now - timedelta(hours=1)) == [c.id, d.id]
        assert ids(until=now - timedelta(hours=1)) == [a.id, b.id]
        assert ids(ticker="AAPL", since=now - timedelta(hours=2, minutes=1)) == [b.id, d.id]
        assert ids(limit=2, newest_first=True) == [d.id, c.id]
        first_seq = list_events(session, limit=1)[0].seq
        assert ids(after_seq=first_seq) == [b.id, c.id, d.id]
        assert [row.id for row in events_after(session, b.id)] == [c.id, d.id]
        assert [row.id for row in events_after(session, a.id, types=["order_sent"])] == [c.id]
        with pytest.raises(InvalidInput, match="unknown event type"):
            list_events(session, types=["nope"])
        with pytest.raises(InvalidInput, match="not in the history"):
            events_after(session, uuid.uuid4())


def test_retention_purge_removes_only_old_published_events(db: Database) -> None:
    old = datetime.now(UTC) - timedelta(days=100)
    old_published = event(occurred_at=old)
    old_owed = event(occurred_at=old)
    recent_published = event(occurred_at=datetime.now(UTC) - timedelta(days=10))
    commit(db, old_published, old_owed, recent_published)
    with db.unit_of_work() as uow:
        uow.session.execute(update(EventRecord)
                            .where(EventRecord.id.in_([old_published.id, recent_published.id]))
                            .values(published_at=func.now()))
        assert purge_older_than(uow.session, 90) == 1
        uow.commit()
    assert {row.id for row in stored(db)} == {old_owed.id, recent_published.id}
    with db.sessions() as session, pytest.raises(InvalidInput):
        purge_older_than(session, -1)


# --- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli(service_env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    from arbiter.commands.events import app

    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str | None] | None = None) -> Any:
        get_settings.cache_clear()
        return runner.invoke(app, list(args), env={**service_env, **(env or {})})

    yield invoke
    get_settings.cache_clear()


def test_cli_lists_events_as_json_and_refuses_bad_input(
        bus: Bus, cli: Callable[..., Any]) -> None:
    database, _ = bus
    sent = commit(database, event(EventType.ORDER_SENT, order_id=5, strategy="momentum"),
                  event(EventType.ORDER_FILLED, order_id=5, strategy="momentum"),
                  event(EventType.ORDER_SENT, order_id=6, strategy="meanrev"))

    result = cli("list", "--json")
    assert result.exit_code == 0, result.output
    assert [Event.model_validate(item) for item in json.loads(result.stdout)] == sent

    result = cli("list", "--json", "--type", "order_sent", "--strategy", "meanrev",
                 "--since", "10m")
    assert [item["id"] for item in json.loads(result.stdout)] == [str(sent[2].id)]

    result = cli("list", "--order", "5")
    assert result.exit_code == 0 and "order_filled" in result.stdout

    result = cli("list", "--type", "bogus")
    assert result.exit_code == 2 and "unknown event type 'bogus'" in result.output
    result = cli("list", "--since", "yesterday-ish")
    assert result.exit_code == 2 and "use e.g. 10m" in result.output
    result = cli("list", env={"ARBITER_DATABASE_URL": None})
    assert result.exit_code == 2 and "arbiter up" in result.output
    assert "Traceback" not in result.output


def test_cli_publishes_external_events_and_refuses_bad_ones(
        bus: Bus, cli: Callable[..., Any]) -> None:
    database, _ = bus
    result = cli("publish", "consensus_reached", "--source", "war-room",
                 "--payload", '{"decision": "hold"}')
    assert result.exit_code == 0, result.output
    published = Event.from_json(result.stdout)
    assert [row.id for row in stored(database)] == [published.id]

    result = cli("publish", "order_filled", "--source", "war-room")
    assert result.exit_code == 2 and "published by Arbiter itself" in result.output
    result = cli("publish", "debate_started", "--source", "war-room", "--payload", "{oops")
    assert result.exit_code == 2 and "not valid JSON" in result.output
    assert len(stored(database)) == 1


def test_cli_prints_every_types_payload_schema_as_one_json_object() -> None:
    from arbiter.commands.events import app

    result = CliRunner().invoke(app, ["schema", "--json"])
    assert result.exit_code == 0, result.output
    schemas = json.loads(result.stdout)
    assert sorted(schemas) == sorted(t.value for t in EventType)
    assert {"requesting_strategy_name", "owning_priority", "reasoning"} <= set(
        schemas["order_blocked_by_conflict"]["properties"])
    table = CliRunner().invoke(app, ["schema"])
    assert table.exit_code == 0 and "position_stop_loss_triggered" in table.stdout
