"""Orders: newest first, filtered and paged on the server (keyset on the id, so page 2,000 is
as fast as page 1), and one order's story: its audit trail, fills, conflict decision, events.
Cancel is offered only where the state allows it, through the API's cancel route."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from core.states import OrderState
from db.models import ConflictLog, EventRecord, Fill, Order, OrderTransition, ReviewItem, Strategy
from web.dashboard.conflicts import clean_strategy, clean_ticker
from web.dashboard.overview import db_now
from web.dashboard.render import Viewer, render

router = APIRouter()
PAGE_SIZES = (25, 50, 100)
# Where a cancel can still do something: before submission, or live at the brokerage.
CANCELLABLE = frozenset({"SIGNAL_RECEIVED", "VALIDATING", "ORDER_PENDING", "ORDER_SENT",
                         "PARTIAL_FILLED"})  # fmt: skip


def cancel_path(request: Request) -> str | None:
    """The API's cancel route for an order (`{id}` to fill in), from its OpenAPI schema
    (built once, then cached by FastAPI)."""
    schema: dict[str, Any] = request.app.openapi()
    for path, methods in schema.get("paths", {}).items():
        if (path.startswith("/api/v1/orders/{") and path.endswith("}/cancel")
                and "post" in methods):  # fmt: skip
            return str(path).split("{", 1)[0] + "{id}/cancel"
    return None


def _list(rt: Any, state: str | None, strategy: str | None, ticker: str | None, review: bool,
          before: int | None, size: int) -> dict[str, Any]:  # fmt: skip
    query = select(Order).order_by(Order.id.desc()).limit(size + 1)
    if state:
        query = query.where(Order.state == state)
    if strategy:
        query = query.where(Order.strategy_name == strategy)
    if ticker:
        query = query.where(Order.ticker == ticker)
    if review:
        query = query.where(Order.needs_manual_review)
    if before is not None:
        query = query.where(Order.id < before)
    with rt.database.sessions() as session:
        now = db_now(session)
        rows = list(session.scalars(query))
        names = list(session.scalars(select(Strategy.name).order_by(Strategy.name)))
    return {"now": now, "rows": rows[:size], "older": rows[size - 1].id if len(rows) > size
            else None, "strategy_names": names}  # fmt: skip


@router.get("/orders", response_class=HTMLResponse, include_in_schema=False)
async def orders_page(
    request: Request,
    _: Viewer,
    state: str | None = Query(None, max_length=20),
    strategy: str | None = Query(None, max_length=64),
    ticker: str | None = Query(None, max_length=16),
    review: bool = False,
    before: int | None = Query(None, ge=1, le=2**63 - 1),
    size: int = Query(50, ge=1, le=100),
) -> Response:
    chosen_state = state.strip().upper() if state else None
    if chosen_state not in {s.value for s in OrderState}:
        chosen_state = None
    size = size if size in PAGE_SIZES else 50
    context = await run_in_threadpool(
        _list, request.app.state.runtime, chosen_state, clean_strategy(strategy),
        clean_ticker(ticker), review, before, size,
    )  # fmt: skip
    context.update(
        states=[s.value for s in OrderState], paged=before is not None, size=size,
        sizes=PAGE_SIZES, cancellable=CANCELLABLE, cancel_path=cancel_path(request),
        filters={"state": chosen_state or "", "strategy": strategy or "",
                 "ticker": (ticker or "").strip().upper(), "review": review},
    )  # fmt: skip
    return render(request, "orders.html", context, page="orders", title="Orders")


def _detail(rt: Any, order_id: int) -> dict[str, Any] | None:
    with rt.database.sessions() as session:
        order = session.get(Order, order_id)
        if order is None:
            return None
        now = db_now(session)
        return {
            "now": now,
            "order": order,
            "transitions": list(session.scalars(select(OrderTransition).where(
                OrderTransition.order_id == order_id).order_by(OrderTransition.id))),
            "fills": list(session.scalars(select(Fill).where(Fill.order_id == order_id)
                                          .order_by(Fill.id))),
            "events": list(session.scalars(select(EventRecord).where(
                EventRecord.order_id == order_id).order_by(EventRecord.seq).limit(500))),
            "conflicts": list(session.scalars(select(ConflictLog).where(
                ConflictLog.order_id == order_id).order_by(ConflictLog.id))),
            "reviews": list(session.scalars(select(ReviewItem).where(
                ReviewItem.order_id == order_id).order_by(ReviewItem.id))),
        }  # fmt: skip


@router.get("/orders/{order_id}", response_class=HTMLResponse, include_in_schema=False)
async def order_detail(request: Request, _: Viewer, order_id: int) -> Response:
    if not 0 < order_id < 2**63:
        raise HTTPException(404, "no such order")
    context = await run_in_threadpool(_detail, request.app.state.runtime, order_id)
    if context is None:
        raise HTTPException(404, f"no order {order_id}")
    order = context["order"]
    filled = order.filled_quantity or 0
    context["fill_pct"] = (float(filled / order.quantity * 100) if order.quantity else 0.0)
    context["cancel_path"] = cancel_path(request)
    context["can_cancel"] = order.state in CANCELLABLE
    return render(request, "order.html", context, page="orders", title=f"Order {order_id}")
