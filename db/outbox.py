"""Writing events and audit rows into the outbox, in the caller's transaction.

`record` keeps a transaction's audit rows (order_transitions) and events in the session and
writes them all in one statement just before the transaction commits, the rows as JSON arrays
unpacked by Postgres. The text is fixed, so it is parsed once per connection and prepared; ORM
objects or a multi-row VALUES statement (compiled afresh for every row count) for rows nobody
reads back in the transaction would cost the hot path more than the rows themselves. The same
statement carries the UPDATE of an order whose changes the OrderManager staged
(db/order_writes.py): a pipeline step's writes are one round trip.

Nothing in a writing transaction reads these tables back. Inside a savepoint they are written
at once, so that rolling the savepoint back takes them (and only them) with it; a rolled-back
transaction takes its pending rows with it too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from core.events import Event, EventType, parse_payload
from db import order_writes
from db.engine import PENDING_EVENTS
from db.models import EventRecord

_PENDING_ROWS = "arbiter_outbox_rows"
_EVENT_COLUMNS = (
    "id, type, occurred_at, source, order_id, client_order_id, strategy, ticker, payload, "
    "schema_version"
)
_AUDIT_COLUMNS = "order_id, from_state, to_state, reason, actor, cause"
_AUDIT_CTE = (
    f"audit AS (INSERT INTO order_transitions ({_AUDIT_COLUMNS}) SELECT {_AUDIT_COLUMNS}"
    " FROM jsonb_to_recordset(CAST(:audits AS jsonb)) AS a(order_id bigint, from_state text,"
    " to_state text, reason text, actor text, cause text))"
)
_EVENTS_INSERT = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS}"
    " FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS e(id uuid, type text,"
    " occurred_at timestamptz, source text, order_id bigint, client_order_id text,"
    " strategy text, ticker text, payload jsonb, schema_version int)"
)
_WRITE = text(f"WITH {_AUDIT_CTE} {_EVENTS_INSERT}")


@lru_cache(maxsize=256)
def _write_with_update(columns: frozenset[str]) -> TextClause:
    """The rows' statement with an order's staged UPDATE as one more CTE."""
    update = order_writes.update_sql(columns)
    return order_writes.typed(
        text(f"WITH staged AS ({update}), {_AUDIT_CTE} {_EVENTS_INSERT}"), columns
    )


@dataclass
class _Pending:
    audits: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def emit(session: Session, event: Event) -> Event:
    """Store `event` with the change being made; it is published once the caller commits.
    A payload its type's model refuses raises InvalidInput here, before anything is stored."""
    record(session, [event])
    return event


def record(session: Session, events: Sequence[Event], audit: dict[str, Any] | None = None) -> None:
    """Store `events` and, when given, one order_transitions row (`audit`: order_id,
    from_state, to_state, reason, actor, cause) with the transaction. Every payload is checked
    against its type's model first: nothing is stored otherwise."""
    for event in events:
        parse_payload(event.type, event.payload)
    audits = [audit] if audit is not None else []
    if session.in_nested_transaction():
        # Written at once, so that rolling the savepoint back takes them with it; the relay
        # publishes the events once the transaction has committed them.
        _write(session, audits, events)
        return
    session.connection()  # begun now, so that a rollback ends it and drops these rows
    pending: _Pending = session.info.setdefault(_PENDING_ROWS, _Pending())
    pending.audits.extend(audits)
    pending.events.extend(events)
    session.info.setdefault(PENDING_EVENTS, []).extend(events)


def write_pending(session: Session) -> None:
    """Write the rows `record` keeps and the orders' staged changes (db/order_writes.py) now
    (the commit does it otherwise). One order's UPDATE goes in the rows' statement."""
    staged = order_writes.take_staged(session)
    pending: _Pending | None = session.info.pop(_PENDING_ROWS, None)
    rows = pending if pending is not None and (pending.audits or pending.events) else None
    merged = staged.pop() if staged and rows is not None else None
    for entry in staged:
        order_writes.write(session, entry)
    if rows is not None:
        _write(session, rows.audits, rows.events, merged)


def _write(
    session: Session,
    audits: Sequence[dict[str, Any]],
    events: Sequence[Event],
    update: order_writes.Staged | None = None,
) -> None:
    """One statement, on the connection: nothing pending in the session needs flushing first."""
    if not (audits or events):
        return
    parameters = {
        "audits": json.dumps(list(audits)),
        "events": "[" + ",".join(event.to_json() for event in events) + "]",
    }
    if update is None:
        session.connection().execute(_WRITE, parameters)
        return
    statement = _write_with_update(frozenset(update.changes))
    session.connection().execute(statement, parameters | order_writes.parameters(update))
    order_writes.written(update)


@sa_event.listens_for(Session, "before_commit")
def _write_before_commit(session: Session) -> None:
    write_pending(session)


@sa_event.listens_for(Session, "after_transaction_end")
def _drop_with_transaction(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # committed (written above) or rolled back (void)
        session.info.pop(_PENDING_ROWS, None)


def record_to_event(record: EventRecord) -> Event:
    return Event(
        id=record.id,
        type=EventType(record.type),
        occurred_at=record.occurred_at,
        source=record.source,
        order_id=record.order_id,
        client_order_id=record.client_order_id,
        strategy=record.strategy,
        ticker=record.ticker,
        payload=record.payload,
        schema_version=record.schema_version,
    )
