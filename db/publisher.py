"""The outbox published to Redis pub/sub, and the relay (subscribers are in
strategy_client/subscriber.py, other processes' events in strategy_client/external_events.py).

Every event is first a row of `events` (outbox and durable history in one), written in the
transaction of the change it describes. After commit, `EventPublisher.after_commit` PUBLISHes
each envelope on `<prefix>.<type>` (e.g. `arbiter.events.order_filled`) and marks the rows
published; whatever it could not publish (Redis down, a crash in between) `relay_unpublished`
publishes later. Delivery on pub/sub is therefore at-least-once; subscribers drop duplicates by
event id. In the history each event is stored exactly once (its id is unique).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from core.events import Event, channel_for
from db.engine import Database
from db.models import EventRecord
from db.outbox import record_to_event

log = logging.getLogger(__name__)

# Marks what after_commit published. Rows a relay holds are skipped, not waited for: the
# relay publishes and marks them itself (a duplicate on pub/sub, which is allowed).
_MARK_PUBLISHED = text(
    "UPDATE events SET published_at = now() WHERE seq IN ("
    " SELECT seq FROM events WHERE id = ANY(:ids) AND published_at IS NULL"
    " FOR UPDATE SKIP LOCKED)"
)


def redis_pool(
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
        before_publish: Callable[[], None] = lambda: None,
    ) -> None:
        self.redis_url = redis_url
        self.channel_prefix = channel_prefix
        self.database = database
        # A fault test's crash point between commit and publish.
        self.before_publish = before_publish
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
                pool = redis_pool(
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
        self.before_publish()
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
