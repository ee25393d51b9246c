"""The overview: orders by state, signals per minute, open review items, the kill switch,
the last reconciliation, and health and freshness (each panel says when it was read)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.states import OrderState
from db.kill_switch import kill_switch, set_kill_switch
from db.models import Order, ReviewItem, Strategy
from web.dashboard import health
from web.dashboard.render import Actor, Viewer, render

router = APIRouter()
SPARK_MINUTES = 30


def db_now(session: Session) -> datetime:
    """The database's clock: every age and countdown on the dashboard is judged by it."""
    now: datetime | None = session.scalar(select(func.now()))
    assert now is not None
    return now


def orders_by_state(session: Session) -> list[tuple[str, int]]:
    query = select(Order.state, func.count()).group_by(Order.state)
    counts = dict(session.execute(query).tuples().all())
    return [(state.value, int(counts.get(state.value, 0))) for state in OrderState]


def signals_per_minute(session: Session, now: datetime) -> list[tuple[datetime, int]]:
    """Signals recorded per minute over the last SPARK_MINUTES minutes, oldest first."""
    start = (now - timedelta(minutes=SPARK_MINUTES - 1)).replace(second=0, microsecond=0)
    minute = func.date_trunc("minute", Order.created_at)
    rows: dict[datetime, int] = dict(
        session.execute(
            select(minute, func.count()).where(Order.created_at >= start).group_by(minute)
        ).tuples().all()
    )
    return [(start + timedelta(minutes=i), int(rows.get(start + timedelta(minutes=i), 0)))
            for i in range(SPARK_MINUTES)]  # fmt: skip


def last_signal_per_strategy(session: Session) -> list[dict[str, Any]]:
    """Each strategy's newest order (one index probe per strategy, never a scan)."""
    latest = (
        select(func.max(Order.created_at))
        .where(Order.strategy_name == Strategy.name)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Strategy.name, Strategy.active, Strategy.priority, latest).order_by(
            Strategy.priority.desc(), Strategy.name
        )
    ).tuples()
    return [{"name": n, "active": a, "priority": p, "last": t} for n, a, p, t in rows]


def _read(rt: Any) -> dict[str, Any]:
    with rt.database.sessions() as session:
        now = db_now(session)
        states = orders_by_state(session)
        spark = signals_per_minute(session, now)
        context = {
            "now": now,
            "states": states,
            "orders_total": sum(n for _, n in states),
            "open_orders": sum(n for s, n in states if s in OPEN_STATES),
            "spark": spark,
            "spark_max": max([n for _, n in spark] + [1]),
            "last_minute": _last_minute(session, now),
            "review_open": int(session.scalar(select(func.count()).select_from(ReviewItem)
                                              .where(ReviewItem.resolved_at.is_(None))) or 0),
            "kill": kill_switch(session),
            "strategies": last_signal_per_strategy(session),
            "postgres": health.postgres(session),
            "backlog": health.outbox_backlog(session),
        }  # fmt: skip
    context["redis"] = health.redis_check(rt.redis)
    context["queues"] = health.queue_depths(rt.redis)
    context["queues_as_of"] = health.now()
    context["reconciliation"] = health.last_reconciliation(rt.redis)
    context["brokerage"], context["account"] = health.PROBE.check(rt.brokerage)
    return context


OPEN_STATES = {s.value for s in OrderState} - {"FULLY_FILLED", "CANCELLED", "REJECTED", "FAILED"}


def _last_minute(session: Session, now: datetime) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Order)
            .where(Order.created_at > now - timedelta(minutes=1))
        )
        or 0
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def overview(request: Request, _: Viewer) -> Response:
    context = await run_in_threadpool(_read, request.app.state.runtime)
    return render(request, "overview.html", context, page="overview", title="Overview")


def _switch(rt: Any, on: bool, reason: str, who: str) -> None:
    with rt.database.unit_of_work() as uow:
        set_kill_switch(uow.session, on, reason, f"web:{who}")
        uow.commit()


@router.post("/kill-switch", include_in_schema=False)
async def kill_switch_form(
    request: Request,
    who: Actor,
    on: bool = Form(...),
    reason: str = Form("", max_length=500),
) -> Response:
    text = reason.strip() or ("stopped from the dashboard" if on else "resumed from the dashboard")
    await run_in_threadpool(_switch, request.app.state.runtime, on, text, who.name)
    return RedirectResponse("/", 303)
