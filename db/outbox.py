"""Writing events into the outbox, in the caller's transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.events import Event, EventType, parse_payload
from db.engine import PENDING_EVENTS
from db.models import EventRecord


def emit(session: Session, event: Event) -> Event:
    """Store `event` with the change being made; it is published once the caller commits.
    A payload its type's model refuses raises InvalidInput here, before anything is stored."""
    parse_payload(event.type, event.payload)
    session.add(
        EventRecord(
            id=event.id,
            type=event.type.value,
            occurred_at=event.occurred_at,
            source=event.source,
            order_id=event.order_id,
            client_order_id=event.client_order_id,
            strategy=event.strategy,
            ticker=event.ticker,
            payload=event.payload,
            schema_version=event.schema_version,
        )
    )
    session.info.setdefault(PENDING_EVENTS, []).append(event)
    return event


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
