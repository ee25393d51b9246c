"""Strategies: priority (higher wins a conflict), on/off, lock length, what each owns.
Every change is a CSRF-protected form of an admin session, audited by an event."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from core.errors import InvalidInput
from core.signals import STRATEGY_PATTERN
from db import strategies as store
from db.models import Order, Strategy, TickerOwnership
from web.dashboard.overview import db_now
from web.dashboard.render import Actor, Viewer, render

router = APIRouter()
SAVED = {"priority": "Priority saved", "on": "Strategy switched on", "off": "Strategy switched off"}


def _read(rt: Any) -> dict[str, Any]:
    with rt.database.sessions() as session:
        now = db_now(session)
        owned = dict(
            session.execute(
                select(TickerOwnership.strategy_id, func.count())
                .where(TickerOwnership.released_at.is_(None))
                .group_by(TickerOwnership.strategy_id)
            ).tuples().all()
        )
        latest = (
            select(func.max(Order.created_at))
            .where(Order.strategy_name == Strategy.name)
            .scalar_subquery()
        )
        rows = [
            {"strategy": s, "owned": int(owned.get(s.id, 0)), "last_signal": last,
             "lock_days": (s.config or {}).get("ownership_lock_days", 0)}
            for s, last in session.execute(
                select(Strategy, latest).order_by(Strategy.priority.desc(), Strategy.name)
            ).tuples()
        ]  # fmt: skip
    return {"now": now, "rows": rows}


@router.get("/strategies", response_class=HTMLResponse, include_in_schema=False)
async def strategies_page(
    request: Request, _: Viewer, saved: str | None = None, name: str | None = None,
) -> Response:  # fmt: skip
    context = await run_in_threadpool(_read, request.app.state.runtime)
    known = {row["strategy"].name for row in context["rows"]}
    context["notice"] = (f"{SAVED[saved]}: {name}" if saved in SAVED and name in known else None)
    context["error"] = None
    return render(request, "strategies.html", context, page="strategies", title="Strategies")


def _name(value: str) -> str:
    if not STRATEGY_PATTERN.match(value):
        raise HTTPException(404, "no such strategy")
    return value


def _set_priority(rt: Any, name: str, priority: int, who: str) -> None:
    with rt.database.unit_of_work() as uow:
        store.update_strategy(uow.session, name, actor=f"web:{who}", priority=priority,
                              reason="changed on the dashboard")  # fmt: skip
        uow.commit()


def _set_active(rt: Any, name: str, active: bool, who: str) -> None:
    with rt.database.unit_of_work() as uow:
        store.set_active(uow.session, name, active, f"switched {'on' if active else 'off'} "
                         f"on the dashboard by web:{who}")  # fmt: skip
        uow.commit()


async def _failed(request: Request, message: str) -> Response:
    context = await run_in_threadpool(_read, request.app.state.runtime)
    context["notice"], context["error"] = None, message
    return render(request, "strategies.html", context, page="strategies", title="Strategies",
                  status_code=422)  # fmt: skip


@router.post("/strategies/{name}/priority", include_in_schema=False)
async def change_priority(
    request: Request,
    who: Actor,
    name: str,
    priority: str = Form(..., max_length=12),
) -> Response:
    name = _name(name)
    try:
        value = int(priority.strip())
        if not 0 <= value <= 1_000_000:
            raise ValueError
    except ValueError:
        return await _failed(request, f"Priority for {name} must be a whole number 0 to 1,000,000.")
    try:
        await run_in_threadpool(_set_priority, request.app.state.runtime, name, value, who.name)
    except InvalidInput as exc:
        return await _failed(request, str(exc))
    return RedirectResponse(f"/strategies?saved=priority&name={name}", 303)


@router.post("/strategies/{name}/active", include_in_schema=False)
async def switch(
    request: Request,
    who: Actor,
    name: str,
    active: bool = Form(...),
) -> Response:
    name = _name(name)
    try:
        await run_in_threadpool(_set_active, request.app.state.runtime, name, active, who.name)
    except InvalidInput as exc:
        return await _failed(request, str(exc))
    return RedirectResponse(f"/strategies?saved={'on' if active else 'off'}&name={name}", 303)
