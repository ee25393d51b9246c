"""Live events: the newest of the durable history, then every event as it is published
(the browser appends them from the stream; after a drop the stream resumes from the last
event it delivered, so nothing is missed and nothing shown twice)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from core.errors import InvalidInput
from core.events import EventType
from db.event_history import list_events
from web.dashboard.conflicts import clean_strategy, clean_ticker
from web.dashboard.overview import db_now
from web.dashboard.render import Viewer, render

router = APIRouter()
SHOWN = 200


def _read(rt: Any, types: list[str] | None, strategy: str | None, ticker: str | None
          ) -> dict[str, Any]:  # fmt: skip
    with rt.database.sessions() as session:
        now = db_now(session)
        try:
            rows = list_events(session, types=types, strategy=strategy, ticker=ticker,
                               limit=SHOWN, newest_first=True)  # fmt: skip
        except InvalidInput:
            rows = []
    return {"now": now, "rows": rows}


@router.get("/events", response_class=HTMLResponse, include_in_schema=False)
async def events_page(
    request: Request,
    _: Viewer,
    type: str | None = Query(None, max_length=40),
    strategy: str | None = Query(None, max_length=64),
    ticker: str | None = Query(None, max_length=16),
) -> Response:
    known = {t.value for t in EventType}
    chosen = type if type in known else None
    context = await run_in_threadpool(
        _read, request.app.state.runtime, [chosen] if chosen else None,
        clean_strategy(strategy), clean_ticker(ticker),
    )  # fmt: skip
    context["filters"] = {"type": chosen or "", "strategy": strategy or "",
                          "ticker": (ticker or "").strip().upper()}  # fmt: skip
    context["shown"] = SHOWN
    return render(request, "events.html", context, page="events", title="Live events")
