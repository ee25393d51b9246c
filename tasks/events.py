"""The event bus: the outbox published to Redis pub/sub, the relay, external producers and
subscribers.

Every event is first a row of `events` (outbox and durable history in one), written in the
transaction of the change it describes. After commit, `EventPublisher.after_commit` PUBLISHes
each envelope on `<prefix>.<type>` (e.g. `arbiter.events.order_filled`) and marks the rows
published; whatever it could not publish (Redis down, a crash in between) `relay_unpublished`
publishes later. Delivery on pub/sub is therefore at-least-once; subscribers drop duplicates by
event id. In the history each event is stored exactly once (its id is unique).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from core.errors import InvalidInput
from core.events import EXTERNAL_EVENT_TYPES, Event, EventType, channel_for
from db.engine import Database, UnitOfWork
from db.event_history import list_events, max_seq, seq_of
from db.models import EventRecord
from db.outbox import emit, record_to_event
from tasks.crashpoints import crash_point

log = logging.getLogger(__name__)

MAX_EXTERNAL_PAYLOAD_BYTES = 64 * 1024
MAX_PAYLOAD_DEPTH = 32
MAX_SOURCE_LENGTH = 64

# Marks what after_commit published. Rows a relay holds are skipped, not waited for: the
# relay publishes and marks them itself (a duplicate on pub/sub, which is allowed).
_MARK_PUBLISHED = text(
    "UPDATE events SET published_at = now() WHERE seq IN ("
    " SELECT seq FROM events WHERE id = ANY(:ids) AND published_at IS NULL"
    " FOR UPDATE SKIP LOCKED)"
)


def _redis_pool(
    url: str,
    *,
    connect_timeout_s: float,
    socket_timeout_s: float | None,
    retries: int,
    health_check_s: int = 0,
) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        socket_keepalive=True,
        health_check_interval=health_check_s,
        # Only an immediate retry of a dropped (stale) connection; never a backoff that stalls.
        retry=Retry(NoBackoff(), retries, supported_errors=(redis.ConnectionError,)),
    )


class EventPublisher:
    """PUBLISHes committed events; hand `after_commit` to `Database(url, after_commit=...)`.

    `database` (needed to mark rows published) may be set after construction, as the
    Database usually takes this publisher's hook: see `attach_publisher`.
    """

    def __init__(
        self,
        redis_url: str,
        channel_prefix: str = "arbiter.events",
        database: Database | None = None,
        *,
        connect_timeout_s: float = 0.5,
        socket_timeout_s: float = 1.0,
        pause_after_failure_s: float = 1.0,
        mark_interval_s: float = 0.2,
    ) -> None:
        self.redis_url = redis_url
        self.channel_prefix = channel_prefix
        self.database = database
        self._connect_timeout_s = connect_timeout_s
        self._socket_timeout_s = socket_timeout_s
        self._pause_after_failure_s = pause_after_failure_s
        self._lock = threading.Lock()
        self._redis: redis.Redis | None = None
        self._pool_pid = 0
        self._failing = False
        self._paused_until = 0.0
        # Published ids waiting to be marked, written in batches by a background thread.
        self._mark_interval_s = mark_interval_s
        self._marks: list[tuple[Database, uuid.UUID]] = []
        self._marks_lock = threading.Lock()
        self._marker_pid = 0

    def _client(self) -> redis.Redis:
        with self._lock:
            if self._redis is None or self._pool_pid != os.getpid():
                # A forked child must not share its parent's sockets: a pool of its own.
                pool = _redis_pool(
                    self.redis_url,
                    connect_timeout_s=self._connect_timeout_s,
                    socket_timeout_s=self._socket_timeout_s,
                    retries=1,
                )
                # One client per process: building one costs more than a PUBLISH.
                self._redis = redis.Redis(connection_pool=pool)
                self._pool_pid = os.getpid()
            return self._redis

    def publish(self, events: Sequence[Event]) -> None:
        """PUBLISH each envelope on its type's channel, in order, in one pipeline.
        Raises redis.RedisError if Redis cannot take them."""
        if not events:
            return
        pipe = self._client().pipeline(transaction=False)
        for event in events:
            pipe.publish(channel_for(event.type, self.channel_prefix), event.to_json())
        pipe.execute()

    def after_commit(self, events: Sequence[Event], database: Database | None = None) -> None:
        """Publish, then mark published. Never raises for Redis or Postgres trouble: what is
        left unmarked is the relay's. After a failure, skips Redis for a moment so that a dead
        Redis costs a worker one connect timeout per pause, not one per commit."""
        crash_point("after_commit_before_publish")
        if not events:
            return
        if time.monotonic() < self._paused_until:
            return
        try:
            self.publish(events)
        except redis.RedisError as exc:
            self._paused_until = time.monotonic() + self._pause_after_failure_s
            if not self._failing:
                self._failing = True
                log.warning("cannot publish events to Redis (%s); the relay will publish them", exc)
            return
        if self._failing:
            self._failing = False
            log.info("publishing events to Redis again")
        self._queue_marks([event.id for event in events], database or self.database)

    def _queue_marks(self, ids: Sequence[uuid.UUID], database: Database | None) -> None:
        """Marking each commit's events in a transaction of its own would double the commits
        on the hot path; a background thread marks them in batches instead. A mark lost to a
        crash only means the relay publishes that event once more (at-least-once)."""
        if database is None or not ids:
            return
        with self._marks_lock:
            self._marks.extend((database, event_id) for event_id in ids)
            if self._marker_pid != os.getpid():  # a forked child starts its own thread
                self._marker_pid = os.getpid()
                threading.Thread(target=self._mark_loop, name="event-marker", daemon=True).start()
                atexit.register(self.flush_marks)

    def _mark_loop(self) -> None:
        while True:
            time.sleep(self._mark_interval_s)
            self.flush_marks()

    def flush_marks(self) -> None:
        """Write the queued marks now (one statement per database)."""
        with self._marks_lock:
            marks, self._marks = self._marks, []
        by_database: dict[Database, list[uuid.UUID]] = {}
        for database, event_id in marks:
            by_database.setdefault(database, []).append(event_id)
        for database, ids in by_database.items():
            self.mark_published(ids, database)

    def after_commit_for(self, database: Database) -> Callable[[Sequence[Event]], None]:
        """`after_commit` marking rows in `database` rather than `self.database`."""
        return lambda events: self.after_commit(events, database)

    def mark_published(self, ids: Sequence[uuid.UUID], database: Database | None = None) -> None:
        database = database or self.database
        if database is None or not ids:
            return
        try:
            with database.engine.begin() as conn:
                # Nothing is lost if this commit is: the relay would publish again.
                conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                conn.execute(_MARK_PUBLISHED, {"ids": list(ids)})
        except SQLAlchemyError as exc:
            log.warning(
                "could not mark %d events published (%s); the relay will publish them again",
                len(ids),
                exc,
            )


def attach_publisher(
    database: Database, redis_url: str, channel_prefix: str = "arbiter.events"
) -> EventPublisher:
    """Build a publisher for `database` and make it the database's after-commit hook."""
    publisher = EventPublisher(redis_url, channel_prefix, database)
    database.after_commit = publisher.after_commit
    return publisher


def relay_unpublished(
    database: Database, publisher: EventPublisher, batch: int = 500, min_age_s: float = 0.0
) -> int:
    """Publish every event still owed (`published_at IS NULL`), in `seq` order, one batch per
    transaction. Concurrent relays split the work (`FOR UPDATE SKIP LOCKED`). Stops quietly at
    the first Redis error (the next run carries on). Returns how many it published.

    `min_age_s` leaves the youngest events alone: a worker published them a moment ago and
    its batched mark is on the way (republishing them would only make duplicates)."""
    total = 0
    while True:
        failed = False
        with database.sessions() as session, session.begin():
            records = session.scalars(
                select(EventRecord)
                .where(
                    EventRecord.published_at.is_(None),
                    EventRecord.occurred_at < func.now() - timedelta(seconds=min_age_s),
                )
                .order_by(EventRecord.seq)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            if not records:
                return total
            try:
                publisher.publish([record_to_event(record) for record in records])
            except redis.RedisError as exc:
                log.warning("relay: cannot publish to Redis (%s); events stay owed", exc)
                failed = True
            else:
                session.execute(
                    update(EventRecord)
                    .where(EventRecord.seq.in_([record.seq for record in records]))
                    .values(published_at=func.now())
                )
        if failed:
            return total
        total += len(records)
        if len(records) < batch:
            return total


# --- external producers -------------------------------------------------------------------


def parse_event_type(value: EventType | str) -> EventType:
    """`order_filled`, `ORDER_FILLED` or the enum member; InvalidInput names the allowed ones."""
    if isinstance(value, EventType):
        return value
    name = str(value).strip().lower()
    try:
        return EventType(name)
    except ValueError:
        allowed = ", ".join(sorted(member.value for member in EventType))
        raise InvalidInput(f"unknown event type {value!r}; known types: {allowed}") from None


def external_event_type(value: EventType | str) -> EventType:
    """The type an external producer may publish, or InvalidInput listing those allowed."""
    allowed = ", ".join(sorted(member.value for member in EXTERNAL_EVENT_TYPES))
    try:
        event_type = parse_event_type(value)
    except InvalidInput:
        raise InvalidInput(
            f"unknown event type {value!r}; other processes may publish: {allowed}"
        ) from None
    if event_type not in EXTERNAL_EVENT_TYPES:
        raise InvalidInput(
            f"{event_type.value} is published by Arbiter itself; other processes "
            f"may publish: {allowed}"
        )
    return event_type


def _check_json(value: Any, path: str, depth: int = 0) -> None:
    if depth > MAX_PAYLOAD_DEPTH:
        raise InvalidInput(f"payload nests deeper than {MAX_PAYLOAD_DEPTH} levels at {path}")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"payload{path} is {value}, which JSON cannot carry")
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(f"payload{path} contains a NUL character")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"payload{path} has a non-string key {key!r}")
            _check_json(key, f"{path} key", depth + 1)
            _check_json(item, f"{path}.{key}", depth + 1)
        return
    raise InvalidInput(f"payload{path} is a {type(value).__name__}, not a JSON value")


def validate_external(
    type_: EventType | str,
    *,
    source: Any,
    payload: Any,
    strategy: Any = None,
    ticker: Any = None,
    order_id: Any = None,
) -> Event:
    """The envelope an external producer asked for, or InvalidInput saying what is wrong."""
    event_type = external_event_type(type_)
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput("source must be a non-empty string naming the publisher")
    if len(source) > MAX_SOURCE_LENGTH or not source.isprintable():
        raise InvalidInput(f"source must be at most {MAX_SOURCE_LENGTH} printable characters")
    if not isinstance(payload, Mapping):
        raise InvalidInput(f"payload must be a JSON object, not {type(payload).__name__}")
    _check_json(payload, "")
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > MAX_EXTERNAL_PAYLOAD_BYTES:
        raise InvalidInput(f"payload is {size} bytes; at most {MAX_EXTERNAL_PAYLOAD_BYTES} allowed")
    for field, value, longest in (("strategy", strategy, 64), ("ticker", ticker, 16)):
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= longest):
            raise InvalidInput(f"{field} must be a string of 1 to {longest} characters")
    if order_id is not None and (
        isinstance(order_id, bool) or not isinstance(order_id, int) or order_id <= 0
    ):
        raise InvalidInput("order_id must be a positive integer")
    return Event(
        type=event_type,
        source=source.strip(),
        payload=dict(payload),
        strategy=strategy,
        ticker=ticker,
        order_id=order_id,
    )


def publish_external(
    database: Database,
    publisher: EventPublisher,
    type: EventType | str,
    *,
    source: str,
    payload: Mapping[str, Any],
    strategy: str | None = None,
    ticker: str | None = None,
    order_id: int | None = None,
) -> Event:
    """Store an event from another process in the history (its own transaction), then
    publish it. Refusals raise InvalidInput and store nothing."""
    event = validate_external(
        type, source=source, payload=payload, strategy=strategy, ticker=ticker, order_id=order_id
    )
    with UnitOfWork(database.sessions, publisher.after_commit_for(database)) as uow:
        emit(uow.session, event)
        uow.commit()
    return event


# --- subscribers --------------------------------------------------------------------------

Handler = Callable[[Event], object]
_LOST_CONNECTION = (redis.RedisError, SQLAlchemyError, OSError)


@dataclass(frozen=True)
class _Subscription:
    types: frozenset[EventType] | None
    handler: Handler


class EventSubscriber:
    """Calls handlers with the events of chosen types, live from Redis, catching up from the
    durable history where it was away.

    Catch-up design. History order is `seq`, assigned at INSERT, but transactions commit in
    another order: an event with a lower seq can become visible after one with a higher seq
    was delivered. So catch-up never reads just "seq > last seq". It re-reads a window of
    `lookback` positions below the highest delivered seq and skips the ids it already delivered
    (a bounded set of the last `remember` ids): late committers inside the window are caught,
    nothing is delivered twice. Every (re)connection SUBSCRIBEs first, waits for Redis to
    confirm, then reads the history, then handles the live messages that queued meanwhile,
    again skipping delivered ids, so the switch from history to live has neither gap nor
    duplicate. Started from `last_seen_id` in a fresh process (no ids remembered), history
    positions up to that event count as seen; the one residual gap is an event whose
    transaction was still open when the previous process stopped and which was published
    before this one subscribed.
    """

    def __init__(
        self,
        redis_url: str,
        database: Database | str,
        channel_prefix: str = "arbiter.events",
        *,
        lookback: int = 1000,
        remember: int = 20_000,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        poll_s: float = 0.2,
    ) -> None:
        self.redis_url = redis_url
        self.channel_prefix = channel_prefix
        self._owns_database = isinstance(database, str)
        self.database = Database(database, pool_size=1) if isinstance(database, str) else database
        self.lookback = lookback
        self._remember = max(remember, 2 * lookback)
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._poll_s = poll_s
        self._subscriptions: list[_Subscription] = []
        self._delivered: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._floor = 0  # history positions at or below it count as handled
        self._anchor = 0  # the highest history position delivered
        self._running = False
        self._wanted_types: frozenset[EventType] | None = None
        self.last_event_id: uuid.UUID | None = None
        self.delivered = 0
        self.reconnects = 0
        self.ready = threading.Event()  # set while subscribed and caught up

    def on(
        self, types: EventType | str | Iterable[EventType | str] | None, handler: Handler
    ) -> EventSubscriber:
        """Call `handler(event)` for events of `types` (one, several, or None for all)."""
        if self._running:
            raise RuntimeError("add handlers before run()")
        if not callable(handler):
            raise InvalidInput(f"handler must be callable, not {handler!r}")
        chosen: frozenset[EventType] | None = None
        if types is not None:
            items = [types] if isinstance(types, str) else list(types)
            chosen = frozenset(parse_event_type(item) for item in items)
            if not chosen:
                raise InvalidInput("no event types given; pass None to receive all")
        self._subscriptions.append(_Subscription(chosen, handler))
        return self

    def _wanted(self) -> frozenset[EventType] | None:
        wanted: set[EventType] = set()
        for subscription in self._subscriptions:
            if subscription.types is None:
                return None
            wanted |= subscription.types
        return frozenset(wanted)

    def run(
        self, stop_event: threading.Event | None = None, last_seen_id: uuid.UUID | str | None = None
    ) -> None:
        """Deliver until `stop_event` is set. With `last_seen_id`, first deliver what the
        history holds after that event; without, start from now. Reconnects with backoff."""
        if not self._subscriptions:
            raise InvalidInput("no handlers: call on() before run()")
        stop = stop_event or threading.Event()
        self._running = True
        self._wanted_types = self._wanted()
        try:
            self._set_start(last_seen_id)
            self._loop(stop)
        finally:
            self._running = False
            self.ready.clear()
            if self._owns_database:
                self.database.dispose()

    def run_in_thread(self, last_seen_id: uuid.UUID | str | None = None) -> SubscriberThread:
        thread = SubscriberThread(self, last_seen_id)
        thread.start()
        return thread

    def _set_start(self, last_seen_id: uuid.UUID | str | None) -> None:
        with self.database.sessions() as session:
            if last_seen_id is None:
                self._floor = max_seq(session) if self.last_event_id is None else self._floor
                self._anchor = max(self._anchor, self._floor)
                return
            seq = seq_of(session, last_seen_id)
        if seq is None:
            raise InvalidInput(f"event {last_seen_id} is not in the history (unknown, or purged)")
        self._floor = self._anchor = seq
        self.last_event_id = uuid.UUID(str(last_seen_id))

    def _loop(self, stop: threading.Event) -> None:
        pool = _redis_pool(
            self.redis_url, connect_timeout_s=1.0, socket_timeout_s=5.0, retries=0, health_check_s=5
        )
        delay = self._backoff[0]
        try:
            while not stop.is_set():
                pubsub = redis.Redis(connection_pool=pool).pubsub()
                try:
                    queued = self._subscribe(pubsub)
                    self._catch_up()
                    for message in queued:
                        self._handle_message(message)
                    self.ready.set()
                    delay = self._backoff[0]
                    self._listen(pubsub, stop)
                except _LOST_CONNECTION as exc:
                    self.ready.clear()
                    self.reconnects += 1
                    log.warning(
                        "event subscriber disconnected (%s); reconnecting in %.1fs", exc, delay
                    )
                    stop.wait(delay)
                    delay = min(delay * 2, self._backoff[1])
                finally:
                    with contextlib.suppress(*_LOST_CONNECTION):
                        pubsub.close()
        finally:
            pool.disconnect()

    def _subscribe(self, pubsub: redis.client.PubSub) -> list[dict[str, Any]]:
        """Subscribe and wait until Redis confirms, so that history read afterwards overlaps
        the live stream. Returns data messages that arrived meanwhile (normally none)."""
        wanted = self._wanted_types
        if wanted is None:
            pubsub.psubscribe(f"{self.channel_prefix}.*")
            expected = 1
        else:
            pubsub.subscribe(*sorted(channel_for(t, self.channel_prefix) for t in wanted))
            expected = len(wanted)
        queued: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5.0
        while expected:
            message = pubsub.get_message(timeout=self._poll_s)
            if message is None:
                if time.monotonic() > deadline:
                    raise redis.TimeoutError("Redis did not confirm the subscription")
            elif message["type"] in ("subscribe", "psubscribe"):
                expected -= 1
            else:
                queued.append(message)
        return queued

    def _catch_up(self, page: int = 500) -> None:
        if self.last_event_id is not None:
            with self.database.sessions() as session:
                self._anchor = max(self._anchor, seq_of(session, self.last_event_id) or 0)
        after = max(self._floor, self._anchor - self.lookback)
        while True:
            with self.database.sessions() as session:
                records = list_events(
                    session, types=self._wanted_types, after_seq=after, limit=page
                )
            for record in records:
                self._deliver(record_to_event(record), record.seq)
            if len(records) < page:
                return
            after = records[-1].seq

    def _listen(self, pubsub: redis.client.PubSub, stop: threading.Event) -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=self._poll_s)
            if message is not None:
                self._handle_message(message)

    def _handle_message(self, message: Mapping[str, Any]) -> None:
        if message.get("type") not in ("message", "pmessage"):
            return
        try:
            event = Event.from_json(message["data"])
        except ValidationError:
            log.warning(
                "ignoring a message on %s that is not an event envelope", message.get("channel")
            )
            return
        self._deliver(event, None)

    def _deliver(self, event: Event, seq: int | None) -> None:
        if event.id in self._delivered:
            return
        wanted = self._wanted_types
        if wanted is not None and event.type not in wanted:
            return
        self._delivered[event.id] = None
        if len(self._delivered) > self._remember:
            self._delivered.popitem(last=False)
        for subscription in self._subscriptions:
            if subscription.types is None or event.type in subscription.types:
                try:
                    subscription.handler(event)
                except Exception:  # one handler's bug must not starve the others
                    log.exception(
                        "event handler %r failed on %s %s",
                        subscription.handler,
                        event.type.value,
                        event.id,
                    )
        self.last_event_id = event.id
        if seq is not None:
            self._anchor = max(self._anchor, seq)
        self.delivered += 1


class SubscriberThread(threading.Thread):
    """`EventSubscriber.run` in a daemon thread; `stop()` ends it."""

    def __init__(
        self, subscriber: EventSubscriber, last_seen_id: uuid.UUID | str | None = None
    ) -> None:
        super().__init__(name="arbiter-event-subscriber", daemon=True)
        self.subscriber = subscriber
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._last_seen_id = last_seen_id

    def run(self) -> None:
        try:
            self.subscriber.run(self.stop_event, self._last_seen_id)
        except BaseException as exc:
            self.error = exc
            log.exception("event subscriber stopped on an error")

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once subscribed and caught up (False on timeout or if the thread died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_alive():
            if self.subscriber.ready.wait(0.05):
                return True
        return self.subscriber.ready.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.join(timeout)
