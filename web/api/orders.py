"""/api/v1/orders: filtered lists (newest first, keyset-paged), one order with its audit
trail, fills, events and conflict decision, and cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import OrderNotOpen
from db.models import ConflictLog, EventRecord, Fill, Order, OrderTransition
from service_layer.cancellation import cancel_order as cancel_service
from web.api.common import (
    BIGINT_MAX,
    Cursor,
    Limit,
    Since,
    decode_cursor,
    page,
    respond,
    state_param,
    strategy_param,
    ticker_param,
)
from web.auth import AdminAccess, ReadAccess
from web.runtime import Rt

router = APIRouter(prefix="/orders", tags=["orders"])

OrderKey = Annotated[
    str, Path(min_length=1, max_length=128, description="order id or client_order_id")
]


@router.get("", summary="Orders, newest first; filter by state, strategy, ticker, review, since")
def list_orders(
    _: ReadAccess,
    rt: Rt,
    state: Annotated[str | None, Query(max_length=20, description="e.g. ORDER_SENT")] = None,
    strategy: Annotated[str | None, Query(max_length=64)] = None,
    ticker: Annotated[str | None, Query(max_length=16)] = None,
    review: Annotated[bool | None, Query(description="only orders needing review")] = None,
    since: Since = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JSONResponse:
    query = select(Order)
    if state is not None:
        query = query.where(Order.state == state_param(state))
    if strategy is not None:
        query = query.where(Order.strategy_name == strategy_param(strategy))
    if ticker is not None:
        query = query.where(Order.ticker == ticker_param(ticker))
    if review is not None:
        query = query.where(Order.needs_manual_review.is_(review))
    if since is not None:
        query = query.where(Order.created_at >= since)
    before = decode_cursor(cursor)
    if before is not None:
        query = query.where(Order.id < before)
    with rt.database.sessions() as session:
        rows = [o.summary() for o in session.scalars(query.order_by(Order.id.desc())
                                                      .limit(limit + 1))]  # fmt: skip
    return page(rows, limit)


def find_order(session: Session, key: str) -> Order:
    """By numeric id or by client_order_id; 404 when there is none."""
    order: Order | None
    if key.isascii() and key.isdigit():
        number = int(key)
        order = session.get(Order, number) if 0 < number <= BIGINT_MAX else None
    else:
        order = session.scalar(select(Order).where(Order.client_order_id == key))
    if order is None:
        raise HTTPException(404, f"no order {key!r}")
    return order


@router.get("/{key}", summary="One order with its audit trail, fills, events and conflict")
def get_order(key: OrderKey, _: ReadAccess, rt: Rt) -> JSONResponse:
    with rt.database.sessions() as session:
        order = find_order(session, key)
        transitions = [
            {"from": t.from_state, "to": t.to_state, "reason": t.reason, "actor": t.actor,
             "at": t.created_at}
            for t in session.scalars(select(OrderTransition)
                                     .where(OrderTransition.order_id == order.id)
                                     .order_by(OrderTransition.id))
        ]  # fmt: skip
        fills = [
            {"fill_key": f.fill_key, "quantity": f.quantity, "price": f.price,
             "filled_at": f.filled_at, "created_at": f.created_at}
            for f in session.scalars(select(Fill).where(Fill.order_id == order.id)
                                     .order_by(Fill.id))
        ]  # fmt: skip
        events = [
            {"seq": e.seq, "id": e.id, "type": e.type, "occurred_at": e.occurred_at,
             "source": e.source, "payload": e.payload}
            for e in session.scalars(select(EventRecord).where(EventRecord.order_id == order.id)
                                     .order_by(EventRecord.seq))
        ]  # fmt: skip
        conflicts = [
            {"id": c.id, "requesting_strategy": c.requesting_strategy.name,
             "requesting_priority": c.requesting_priority,
             "owning_strategy": c.owning_strategy.name, "owning_priority": c.owning_priority,
             "resolution": c.resolution, "reasoning": c.reasoning, "created_at": c.created_at}
            for c in session.scalars(select(ConflictLog).where(ConflictLog.order_id == order.id)
                                     .order_by(ConflictLog.id))
        ]  # fmt: skip
        body = {**order.summary(), "transitions": transitions, "fills": fills,
                "events": events, "conflicts": conflicts,
                "signal": (order.order_metadata or {}).get("signal")}  # fmt: skip
    return respond(body)


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(max_length=500)] | None = None


@router.post("/{key}/cancel", status_code=202, summary="Cancel one order (idempotent)")
def cancel_order(
    key: OrderKey, who: AdminAccess, rt: Rt, body: CancelRequest | None = None
) -> JSONResponse:
    with rt.database.sessions() as session:
        order_id = find_order(session, key).id
    try:
        result = cancel_service(
            rt.database, rt.brokerage, str(order_id), requested_by=f"web:{who.name}"
        )
    except OrderNotOpen as exc:  # final already: a conflict with the order's state
        raise HTTPException(409, str(exc)) from exc
    with rt.database.sessions() as session:
        order = find_order(session, str(order_id))
        return respond(
            {"order": order.summary(), "outcome": result.outcome.value, "message": result.message},
            202,
        )
