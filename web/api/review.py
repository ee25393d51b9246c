"""/api/v1/review: what Arbiter could not settle on its own, and a human's decision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from core.states import OrderState
from db.models import Order, ReviewItem
from db.order_manager import OrderManager
from web.api.common import BIGINT_MAX, Cursor, Limit, decode_cursor, page, respond
from web.auth import AdminAccess, ReadAccess
from web.runtime import Rt

router = APIRouter(prefix="/review", tags=["review"])

ItemId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


class Resolve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]
    state: OrderState | None = None  # move the item's order to this state (audited)


def review_row(item: ReviewItem, order: Order | None) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "order_id": item.order_id,
        "client_order_id": order.client_order_id if order else None,
        "strategy": order.strategy_name if order else None,
        "ticker": item.ticker,
        "state": order.state if order else None,
        "reason": item.reason,
        "details": item.details,
        "created_at": item.created_at,
        "resolved_at": item.resolved_at,
        "resolution_note": item.resolution_note,
    }


@router.get("", summary="Review items, newest first (open ones unless resolved=true)")
def list_review(
    _: ReadAccess,
    rt: Rt,
    resolved: Annotated[bool, Query(description="resolved items instead of open ones")] = False,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JSONResponse:
    query = select(ReviewItem, Order).outerjoin(Order, Order.id == ReviewItem.order_id)
    query = query.where(ReviewItem.resolved_at.is_not(None) if resolved
                        else ReviewItem.resolved_at.is_(None))  # fmt: skip
    before = decode_cursor(cursor)
    if before is not None:
        query = query.where(ReviewItem.id < before)
    with rt.database.sessions() as session:
        rows = session.execute(query.order_by(ReviewItem.id.desc()).limit(limit + 1)).tuples()
        items = [review_row(item, order) for item, order in rows]
    return page(items, limit)


@router.post("/{item_id}/resolve", summary="Close an item; optionally move its order's state")
def resolve(item_id: ItemId, body: Resolve, who: AdminAccess, rt: Rt) -> JSONResponse:
    actor = f"web:{who.name}"
    with rt.database.unit_of_work() as uow:
        item = uow.session.get(ReviewItem, item_id, with_for_update=True)
        if item is None:
            raise HTTPException(404, f"no review item {item_id}")
        if item.resolved_at is not None:
            raise HTTPException(409, f"review item {item_id} was already resolved")
        if item.order_id is not None:
            OrderManager(uow.session).resolve_review(item.order_id, note=body.note, actor=actor,
                                                     target=body.state)  # fmt: skip
        elif body.state is not None:
            raise HTTPException(422, f"state: review item {item_id} has no order")
        else:
            item.resolved_at = datetime.now(UTC)
            item.resolution_note = f"{body.note} (by {actor})"
        uow.commit()
    with rt.database.sessions() as session:
        row = session.execute(
            select(ReviewItem, Order).outerjoin(Order, Order.id == ReviewItem.order_id)
            .where(ReviewItem.id == item_id)
        ).tuples().one()  # fmt: skip
        return respond(review_row(*row))
