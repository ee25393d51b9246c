"""/api/v1/events: the durable history, newest first, with filters (the live stream is
/api/v1/events/stream, in web/sse.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select

from core.errors import InvalidInput
from core.events import parse_event_type
from db.models import EventRecord
from web.api.common import (
    BIGINT_MAX,
    Cursor,
    Limit,
    Since,
    decode_cursor,
    page,
    strategy_param,
    ticker_param,
)
from web.auth import ReadAccess
from web.runtime import Rt

router = APIRouter(prefix="/events", tags=["events"])

Types = Annotated[
    str | None,
    Query(
        max_length=2000, description="comma-separated types, e.g. order_filled,conflict_detected"
    ),
]


def parse_types(types: str | None) -> list[str] | None:
    if types is None or not types.strip():
        return None
    try:
        return [parse_event_type(t).value for t in types.split(",") if t.strip()]
    except InvalidInput as exc:
        raise HTTPException(422, f"types: {exc}") from None


def event_row(record: EventRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "id": record.id,
        "type": record.type,
        "occurred_at": record.occurred_at,
        "source": record.source,
        "order_id": record.order_id,
        "client_order_id": record.client_order_id,
        "strategy": record.strategy,
        "ticker": record.ticker,
        "payload": record.payload,
        "schema_version": record.schema_version,
    }


@router.get("", summary="Event history, newest first; filter by types, order, strategy, ticker, "
            "time")  # fmt: skip
def list_events(
    _: ReadAccess,
    rt: Rt,
    types: Types = None,
    order_id: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
    strategy: Annotated[str | None, Query(max_length=64)] = None,
    ticker: Annotated[str | None, Query(max_length=16)] = None,
    since: Since = None,
    until: Annotated[datetime | None, Query(description="only events before this time")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JSONResponse:
    query = select(EventRecord)
    type_values = parse_types(types)
    if type_values is not None:
        query = query.where(EventRecord.type.in_(type_values))
    if order_id is not None:
        query = query.where(EventRecord.order_id == order_id)
    if strategy is not None:
        # External producers may use names outside the strategy pattern: match exactly.
        query = query.where(EventRecord.strategy == (strategy_param(strategy) or strategy))
    if ticker is not None:
        query = query.where(EventRecord.ticker == ticker_param(ticker))
    if since is not None:
        query = query.where(EventRecord.occurred_at >= since)
    if until is not None:
        query = query.where(EventRecord.occurred_at < until)
    before = decode_cursor(cursor)
    if before is not None:
        query = query.where(EventRecord.seq < before)
    with rt.database.sessions() as session:
        rows = [event_row(r) for r in session.scalars(query.order_by(EventRecord.seq.desc())
                                                      .limit(limit + 1))]  # fmt: skip
    return page(rows, limit, key="seq")
