"""GET /api/v1/events/stream: Server-Sent Events, live from Redis pub/sub, resumable.

One Redis subscription per web process (`EventFanout`) feeds every open stream. A stream
subscribes first, then reads the durable history after the client's `Last-Event-ID` header
(or `last_event_id` query parameter, for a page that loads history and then streams), then
hands out live events, skipping ids it already sent: the switch from history to live has no
gap and no duplicate. Each SSE `id:` is the event's id, so the browser's automatic reconnect
resumes where it stopped. If the Redis subscription drops, each stream catches up from the
history again (re-reading a window below the newest position it saw, for transactions that
committed late) before going live. The same design as `strategy_client.subscriber`, async.

The browser authenticates with its session cookie; a token never goes in the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from core.events import Event
from db.event_history import list_events, max_seq, seq_of
from db.models import EventRecord
from db.outbox import record_to_event
from web.api.events import Types, parse_types
from web.auth import ReadAccess
from web.runtime import WebRuntime, runtime_of

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/events", tags=["events"])

KEEPALIVE_S = 15.0
RETRY_MS = 2000
LOOKBACK = 1000
REMEMBER = 20_000
QUEUE_SIZE = 10_000
HISTORY_PAGE = 500


class _Lost:
    """Put on every stream's queue when the subscription dropped or the queue overflowed:
    the stream catches up from the history before it goes on."""


LOST = _Lost()


class EventFanout:
    """One pattern subscription on `<prefix>.*`, copied to every stream's queue."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self._queues: set[asyncio.Queue[Event | _Lost]] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self, timeout_s: float = 5.0) -> asyncio.Queue[Event | _Lost]:
        """A queue of every event published from now on (once Redis confirmed)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="arbiter-event-fanout")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise HTTPException(503, "the event bus (Redis) is unavailable; retry") from None
        queue: asyncio.Queue[Event | _Lost] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event | _Lost]) -> None:
        self._queues.discard(queue)

    @property
    def clients(self) -> int:
        return len(self._queues)

    async def _run(self) -> None:
        delay = 0.2
        while True:
            client = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=2,
                                             health_check_interval=10)  # fmt: skip
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(f"{self.prefix}.*")
                while True:  # wait for Redis to confirm, so history read later overlaps
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None and message["type"] == "psubscribe":
                        break
                self._ready.set()
                delay = 0.2
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=30.0)  # fmt: skip
                    if message is not None and message["type"] == "pmessage":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                self._ready.clear()
                log.warning("event stream lost Redis (%s); reconnecting in %.1fs", exc, delay)
                for queue in list(self._queues):
                    self._put(queue, LOST)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                    await client.aclose()

    def _dispatch(self, data: bytes | str) -> None:
        try:
            event = Event.from_json(data)
        except ValidationError:
            log.warning("ignoring a pub/sub message that is not an event envelope")
            return
        for queue in list(self._queues):
            self._put(queue, event)

    @staticmethod
    def _put(queue: asyncio.Queue[Event | _Lost], item: Event | _Lost) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            # A client too slow to keep up: drop its backlog, it re-reads the history.
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(LOST)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


def fanout_of(request: Request) -> EventFanout:
    app = request.app
    fanout: EventFanout | None = getattr(app.state, "event_stream", None)
    if fanout is None:
        rt = runtime_of(request)
        fanout = EventFanout(rt.redis_url, rt.settings.event_channel_prefix)
        app.state.event_stream = fanout
    return fanout


def frame(event: Event) -> bytes:
    body = event.model_dump(mode="json")
    return f"id: {event.id}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


class _Stream:
    """One client's position: the ids it was sent and the newest history position seen."""

    def __init__(self, rt: WebRuntime, types: frozenset[str] | None) -> None:
        self.rt = rt
        self.types = types
        self.sent: OrderedDict[uuid.UUID, None] = OrderedDict()
        self.floor = 0  # history positions at or below it count as sent
        self.anchor = 0  # the newest history position sent

    def start(self, last_event_id: str | None) -> bool:
        """Set the starting point; False when `last_event_id` is not in the history."""
        with self.rt.database.sessions() as session:
            if last_event_id is None:
                self.floor = self.anchor = max_seq(session)
                return True
            try:
                seq = seq_of(session, last_event_id)
            except ValueError:
                seq = None
            if seq is None:
                self.floor = self.anchor = max_seq(session)
                return False
            self.floor = self.anchor = seq
            return True

    def history(self) -> list[tuple[Event, int]]:
        """Events after the starting point (and late committers in the window below the
        newest seen), oldest first, not yet sent."""
        after = max(self.floor, self.anchor - LOOKBACK)
        found: list[tuple[Event, int]] = []
        while True:
            with self.rt.database.sessions() as session:
                records: list[EventRecord] = list_events(
                    session, types=self.types, after_seq=after, limit=HISTORY_PAGE
                )
                found.extend((record_to_event(r), r.seq) for r in records)
            if len(records) < HISTORY_PAGE:
                return [(e, s) for e, s in found if e.id not in self.sent]
            after = records[-1].seq

    def take(self, event: Event, seq: int | None = None) -> bool:
        """True if the client should get `event` now (and note it as sent)."""
        if event.id in self.sent:
            return False
        if self.types is not None and event.type.value not in self.types:
            return False
        self.sent[event.id] = None
        if len(self.sent) > REMEMBER:
            self.sent.popitem(last=False)
        if seq is not None:
            self.anchor = max(self.anchor, seq)
        return True


async def _events(
    request: Request,
    fanout: EventFanout,
    queue: asyncio.Queue[Event | _Lost],
    stream: _Stream,
    last_event_id: str | None,
) -> AsyncIterator[bytes]:
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        if not await run_in_threadpool(stream.start, last_event_id):
            note = {"detail": "Last-Event-ID is not in the history (purged or unknown); "
                    "reload to resynchronise"}  # fmt: skip
            yield f"event: resync\ndata: {json.dumps(note)}\n\n".encode()
        for event, seq in await run_in_threadpool(stream.history):
            if stream.take(event, seq):
                yield frame(event)
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield b": keepalive\n\n"
                continue
            if isinstance(item, _Lost):
                for event, seq in await run_in_threadpool(stream.history):
                    if stream.take(event, seq):
                        yield frame(event)
            elif stream.take(item):
                yield frame(item)
    finally:
        fanout.unsubscribe(queue)


@router.get(
    "/stream",
    summary="Live events as Server-Sent Events; resumes after Last-Event-ID",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def event_stream(
    request: Request,
    _: ReadAccess,
    types: Types = None,
    last_event_id: Annotated[
        str | None, Query(max_length=64, description="resume after this event id")
    ] = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=64, include_in_schema=False)
    ] = None,
) -> StreamingResponse:
    resume = last_event_id_header or last_event_id
    if resume is not None:
        try:
            uuid.UUID(resume)
        except ValueError:
            raise HTTPException(422, "Last-Event-ID: not an event id (a UUID)") from None
    chosen = parse_types(types)
    stream = _Stream(runtime_of(request), frozenset(chosen) if chosen else None)
    fanout = fanout_of(request)
    queue = await fanout.subscribe()  # before the history is read: no gap between the two
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(_events(request, fanout, queue, stream, resume),
                             media_type="text/event-stream", headers=headers)  # fmt: skip
