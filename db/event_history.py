"""Reading and pruning the durable event history (the `events` table).

History order is `seq` order (the insert order). The session belongs to the caller: nothing here
commits. Every filter has an index of its own (`type, seq`, `order_id, seq`, `strategy, seq`,
`ticker, seq`, `occurred_at`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, delete, func, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.events import EventType
from db.models import EventRecord

MAX_LIMIT = 10_000


def _type_values(types: Iterable[EventType | str] | None) -> list[str] | None:
    if types is None:
        return None
    values = []
    for item in types:
        try:
            values.append(EventType(item).value)
        except ValueError:
            raise InvalidInput(f"unknown event type {item!r}") from None
    return values


def list_events(
    session: Session,
    *,
    types: Iterable[EventType | str] | None = None,
    order_id: int | None = None,
    strategy: str | None = None,
    ticker: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: int | None = None,
    limit: int = 100,
    newest_first: bool = False,
) -> list[EventRecord]:
    """Events matching every given filter. `since` is inclusive and `until` exclusive (both on
    `occurred_at`); `after_seq` pages forward in history order. Oldest first unless
    `newest_first` (then the newest `limit`, newest first)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    query: Select[tuple[EventRecord]] = select(EventRecord)
    type_values = _type_values(types)
    if type_values is not None:
        query = query.where(EventRecord.type.in_(type_values))
    if order_id is not None:
        query = query.where(EventRecord.order_id == order_id)
    if strategy is not None:
        query = query.where(EventRecord.strategy == strategy)
    if ticker is not None:
        query = query.where(EventRecord.ticker == ticker)
    if since is not None:
        query = query.where(EventRecord.occurred_at >= since)
    if until is not None:
        query = query.where(EventRecord.occurred_at < until)
    if after_seq is not None:
        query = query.where(EventRecord.seq > after_seq)
    order = EventRecord.seq.desc() if newest_first else EventRecord.seq.asc()
    return list(session.scalars(query.order_by(order).limit(limit)))


def seq_of(session: Session, event_id: uuid.UUID | str) -> int | None:
    """The history position of one event, None if it is not (or no longer) stored."""
    return session.scalar(select(EventRecord.seq).where(EventRecord.id == _uuid(event_id)))


def max_seq(session: Session) -> int:
    """The newest history position (0 for an empty history)."""
    return int(session.scalar(select(func.coalesce(func.max(EventRecord.seq), 0))) or 0)


def events_after(
    session: Session,
    event_id: uuid.UUID | str,
    *,
    types: Iterable[EventType | str] | None = None,
    limit: int = 1000,
) -> list[EventRecord]:
    """The events stored after `event_id`, in history order. Unknown id: InvalidInput."""
    seq = seq_of(session, event_id)
    if seq is None:
        raise InvalidInput(f"event {event_id} is not in the history (unknown, or purged)")
    return list_events(session, types=types, after_seq=seq, limit=limit)


def purge_older_than(session: Session, days: int) -> int:
    """Delete published events that occurred more than `days` days ago; rows the relay still
    owes are kept whatever their age. Returns how many were deleted."""
    if days < 0:
        raise InvalidInput(f"days must be zero or more, not {days}")
    cutoff = func.now() - timedelta(days=days)
    result = session.execute(
        delete(EventRecord).where(
            and_(EventRecord.occurred_at < cutoff, EventRecord.published_at.is_not(None))
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput(f"not an event id (a UUID): {value!r}") from None
