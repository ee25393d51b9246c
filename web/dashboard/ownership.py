"""The ownership map (owner, priority, lock countdown, position) and each ticker's history.

Countdowns start from seconds left computed with the database's clock and tick down in the
browser by its monotonic clock, so a browser whose wall clock is off still shows them right.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import and_, select
from starlette.concurrency import run_in_threadpool

from core.signals import TICKER_PATTERN
from db.models import ConflictLog, Order, Position, TickerOwnership
from web.api.ownership import ownership_row
from web.dashboard.overview import db_now
from web.dashboard.render import Viewer, render

router = APIRouter()


def _map(rt: Any) -> dict[str, Any]:
    with rt.database.sessions() as session:
        now = db_now(session)
        rows = session.execute(
            select(TickerOwnership, Position.quantity, Position.avg_cost)
            .outerjoin(Position, and_(Position.strategy_id == TickerOwnership.strategy_id,
                                      Position.ticker == TickerOwnership.ticker))
            .where(TickerOwnership.released_at.is_(None))
            .order_by(TickerOwnership.ticker)
        ).tuples()  # fmt: skip
        items = []
        for row, quantity, avg_cost in rows:
            item = ownership_row(row, now, quantity or Decimal(0))
            item["avg_cost"] = avg_cost
            items.append(item)
    return {"now": now, "items": items}


@router.get("/ownership", response_class=HTMLResponse, include_in_schema=False)
async def ownership_map(request: Request, _: Viewer) -> Response:
    context = await run_in_threadpool(_map, request.app.state.runtime)
    return render(request, "ownership.html", context, page="ownership", title="Ownership")


def _history(rt: Any, ticker: str) -> dict[str, Any]:
    with rt.database.sessions() as session:
        now = db_now(session)
        claims = []
        for row in session.scalars(
            select(TickerOwnership)
            .where(TickerOwnership.ticker == ticker)
            .order_by(TickerOwnership.id.desc())
            .limit(200)
        ):
            item = ownership_row(row, now)
            item["how"] = (
                "owns" if row.released_at is None
                else "transferred" if (row.release_reason or "").startswith("transferred to ")
                else "released"
            )  # fmt: skip
            claims.append(item)
        conflicts = list(
            session.execute(
                select(ConflictLog, Order.state)
                .outerjoin(Order, Order.id == ConflictLog.order_id)
                .where(ConflictLog.ticker == ticker)
                .order_by(ConflictLog.id.desc())
                .limit(50)
            ).tuples()
        )
        positions = list(
            session.scalars(
                select(Position).where(Position.ticker == ticker).order_by(Position.quantity.desc())
            )
        )
    return {"now": now, "ticker": ticker, "claims": claims, "conflicts": conflicts,
            "positions": positions}  # fmt: skip


@router.get("/ownership/{ticker}", response_class=HTMLResponse, include_in_schema=False)
async def ticker_history(
    request: Request, _: Viewer, ticker: str
) -> Response:
    symbol = ticker.strip().upper()
    if not TICKER_PATTERN.match(symbol):
        raise HTTPException(404, "not a ticker")
    context = await run_in_threadpool(_history, request.app.state.runtime, symbol)
    return render(request, "ticker.html", context, page="ownership", title=f"{symbol} ownership")
