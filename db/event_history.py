"""Reading and pruning the durable event history (the `events` table).

History order is `seq` order (the insert order). The session belongs to the caller: nothing here
commits. Every filter has an index of its own (`type, seq`, `order_id, seq`, `strategy, seq`,
`ticker, seq`, `occurred_at`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.events import EventType
from db.engine import Database
from db.models import EventRecord

MAX_LIMIT = 10_000
PURGE_BATCH = 5_000  # rows per delete statement (and per transaction)


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


def purge_cutoff(session: Session, older_than: timedelta) -> datetime:
    """The database's clock minus `older_than` (never a worker's clock): one cutoff for every
    batch of one purge."""
    if older_than <= timedelta(0):
        raise InvalidInput(f"the retention must be positive, not {older_than}")
    now: datetime | None = session.scalar(select(func.now()))
    if now is None:
        raise InvalidInput("the database did not tell its time")
    return now - older_than


def _purgeable(cutoff: datetime) -> Any:
    # Published only: an event the relay still owes is kept whatever its age.
    return and_(EventRecord.occurred_at < cutoff, EventRecord.published_at.is_not(None))


def count_purgeable(session: Session, cutoff: datetime) -> int:
    """How many events a purge with this cutoff would delete."""
    query = select(func.count()).select_from(EventRecord).where(_purgeable(cutoff))
    return int(session.scalar(query) or 0)


def purge_batch(session: Session, cutoff: datetime, limit: int = PURGE_BATCH) -> int:
    """Delete at most `limit` published events that occurred before `cutoff`, oldest first,
    skipping rows another transaction holds. Returns how many were deleted."""
    if limit < 1:
        raise InvalidInput(f"the batch size must be at least 1, not {limit}")
    doomed = (
        select(EventRecord.seq)
        .where(_purgeable(cutoff))
        .order_by(EventRecord.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = session.execute(
        delete(EventRecord).where(EventRecord.seq.in_(doomed.scalar_subquery()))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def purge_older_than(session: Session, days: int, limit: int = PURGE_BATCH) -> int:
    """One batch: delete at most `limit` published events that occurred more than `days` days
    ago (by the database's clock), in the caller's transaction."""
    if days < 1:
        raise InvalidInput(f"days must be 1 or more, not {days}")
    return purge_batch(session, purge_cutoff(session, timedelta(days=days)), limit)


@dataclass(frozen=True)
class PurgeReport:
    cutoff: datetime
    deleted: int
    batches: int
    more: bool  # stopped at `max_batches` with purgeable rows left

    def as_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff.isoformat(), "deleted": self.deleted,
                "batches": self.batches, "more": self.more}


def purge_history(
    database: Database,
    older_than: timedelta,
    *,
    batch_size: int = PURGE_BATCH,
    max_batches: int | None = None,
    cutoff: datetime | None = None,
) -> PurgeReport:
    """Delete published events older than `older_than` in batches of `batch_size`, each in a
    transaction of its own (short locks, bounded WAL per commit), until none is left or
    `max_batches` ran. `cutoff` (from `purge_cutoff`) pins the boundary a caller showed."""
    if cutoff is None:
        with database.sessions() as session:
            cutoff = purge_cutoff(session, older_than)
    deleted = batches = 0
    while max_batches is None or batches < max_batches:
        with database.unit_of_work() as uow:
            count = purge_batch(uow.session, cutoff, batch_size)
            uow.commit()
        batches += 1
        deleted += count
        if count < batch_size:
            return PurgeReport(cutoff, deleted, batches, more=False)
    return PurgeReport(cutoff, deleted, batches, more=True)


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput(f"not an event id (a UUID): {value!r}") from None
