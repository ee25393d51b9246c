"""The review queue: what Arbiter could not settle on its own, and a human's decision (a note,
and for an order optionally the state the brokerage says it is in), audited like any change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from core.errors import InvalidInput, InvalidTransition
from core.states import TRANSITIONS, OrderState
from db.models import Order, ReviewItem
from db.order_manager import OrderManager
from web.dashboard.overview import db_now
from web.dashboard.render import Actor, Viewer, render

router = APIRouter()


def _read(rt: Any) -> dict[str, Any]:
    with rt.database.sessions() as session:
        now = db_now(session)
        open_items = list(
            session.execute(
                select(ReviewItem, Order)
                .outerjoin(Order, Order.id == ReviewItem.order_id)
                .where(ReviewItem.resolved_at.is_(None))
                .order_by(ReviewItem.id)
                .limit(500)
            ).tuples()
        )
        resolved = list(
            session.execute(
                select(ReviewItem, Order)
                .outerjoin(Order, Order.id == ReviewItem.order_id)
                .where(ReviewItem.resolved_at.is_not(None))
                .order_by(ReviewItem.resolved_at.desc())
                .limit(20)
            ).tuples()
        )
    targets = {
        order.id: [s.value for s in TRANSITIONS[OrderState(order.state)] if s.value != order.state]
        for _, order in open_items if order is not None
    }  # fmt: skip
    return {"now": now, "open_items": open_items, "resolved": resolved, "targets": targets}


@router.get("/review", response_class=HTMLResponse, include_in_schema=False)
async def review_page(
    request: Request, _: Viewer, resolved: int | None = None
) -> Response:
    context = await run_in_threadpool(_read, request.app.state.runtime)
    context["notice"] = f"Review item {resolved} resolved." if resolved else None
    context["error"] = None
    return render(request, "review.html", context, page="review", title="Review queue")


def resolve_item(rt: Any, item_id: int, note: str, target: OrderState | None, who: str) -> None:
    """Close one review item (and, for an order, its other open items), as the CLI does."""
    with rt.database.unit_of_work() as uow:
        item = uow.session.get(ReviewItem, item_id)
        if item is None:
            raise InvalidInput(f"no review item {item_id}")
        if item.resolved_at is not None:
            return  # resolved already (a second click, another operator): nothing to do
        if item.order_id is not None:
            OrderManager(uow.session).resolve_review(
                item.order_id, note=note, actor=f"web:{who}", target=target
            )
        elif target is not None:
            raise InvalidInput(f"review item {item_id} has no order: a state does not apply")
        else:
            item.resolved_at = datetime.now(UTC)
            item.resolution_note = note
        uow.commit()


@router.post("/review/{item_id}/resolve", include_in_schema=False)
async def resolve(
    request: Request,
    who: Actor,
    item_id: int,
    note: str = Form("", max_length=2000),
    state: str = Form("", max_length=20),
) -> Response:
    if not 0 < item_id < 2**63:
        raise HTTPException(404, "no such review item")
    error = None
    target = None
    if not note.strip():
        error = "Write a note: it is recorded with the decision."
    elif state:
        try:
            target = OrderState(state)
        except ValueError:
            error = f"Unknown state {state!r}."
    if error is None:
        try:
            await run_in_threadpool(resolve_item, request.app.state.runtime, item_id,
                                    note.strip(), target, who.name)  # fmt: skip
        except InvalidInput as exc:
            error = str(exc)
        except InvalidTransition as exc:  # shown; nothing was written
            error = f"Not allowed: {exc}"
    if error is not None:
        context = await run_in_threadpool(_read, request.app.state.runtime)
        context.update(notice=None, error=error)
        return render(request, "review.html", context, page="review", title="Review queue",
                      status_code=422)  # fmt: skip
    return RedirectResponse(f"/review?resolved={item_id}", 303)
