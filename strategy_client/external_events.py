"""Events from other processes (strategies, an AI war room): checked, stored in the durable
history in a transaction of their own, then published like Arbiter's own events.

They are marked external (their source reads `external:<publisher>`), may not use Arbiter's
own sources (`arbiter...`, `worker`, `cli`) nor its system types (ERROR_OCCURRED, SYSTEM_*),
and an order they name must exist."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from core.errors import InvalidInput
from core.events import EXTERNAL_EVENT_TYPES, Event, EventType, parse_event_type, parse_payload
from db.engine import Database, UnitOfWork
from db.models import Order
from db.outbox import emit
from db.publisher import EventPublisher

MAX_EXTERNAL_PAYLOAD_BYTES = 64 * 1024
MAX_PAYLOAD_DEPTH = 32
MAX_SOURCE_LENGTH = 48
EXTERNAL_PREFIX = "external:"
# Types only Arbiter's own processes may state (a forged ERROR_OCCURRED or SYSTEM_STOPPED
# would mislead operators and the notifiers that page on them).
SYSTEM_TYPES = frozenset(
    {EventType.ERROR_OCCURRED, EventType.SYSTEM_STARTED, EventType.SYSTEM_STOPPED}
)
ALLOWED_TYPES = EXTERNAL_EVENT_TYPES - SYSTEM_TYPES
RESERVED_SOURCES = ("arbiter", "worker", "cli", "beat", "external")


def external_event_type(value: EventType | str) -> EventType:
    """The type an external producer may publish, or InvalidInput listing those allowed."""
    allowed = ", ".join(sorted(member.value for member in ALLOWED_TYPES))
    try:
        event_type = parse_event_type(value)
    except InvalidInput:
        raise InvalidInput(
            f"unknown event type {value!r}; other processes may publish: {allowed}"
        ) from None
    if event_type not in ALLOWED_TYPES:
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
    if source.strip().lower().startswith(RESERVED_SOURCES):
        raise InvalidInput(
            f"source {source.strip()!r} is reserved for Arbiter; name your own process"
        )
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
    parse_payload(event_type, payload)
    return Event(
        type=event_type,
        source=EXTERNAL_PREFIX + source.strip(),
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
        if event.order_id is not None and uow.session.get(Order, event.order_id) is None:
            raise InvalidInput(f"order_id {event.order_id} names no order")
        emit(uow.session, event)
        uow.commit()
    return event
