"""Subscribing to Arbiter's events: live from Redis pub/sub, with catch-up from the durable
history after a restart or an outage (see `EventSubscriber`)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from core.errors import InvalidInput
from core.events import Event, EventType, channel_for, parse_event_type
from db.engine import Database
from db.event_history import list_events, max_seq, seq_of
from db.outbox import record_to_event
from db.publisher import redis_pool

log = logging.getLogger(__name__)


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
        pool = redis_pool(
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
        channel = message.get("channel")
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if channel != channel_for(event.type, self.channel_prefix):
            # A forged or misrouted envelope: its type must be the one of its channel.
            log.warning("dropping a %s envelope published on %s", event.type.value, channel)
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
