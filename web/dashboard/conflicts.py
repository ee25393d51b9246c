"""The conflict log: every decision with both strategies, both priorities, the decision, the
reasoning and the resulting order; statistics per strategy; conflicts over time as SVG."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.signals import STRATEGY_PATTERN, TICKER_PATTERN
from db.models import ConflictLog, Order, Strategy
from web.dashboard.overview import db_now
from web.dashboard.render import Viewer, render

router = APIRouter()
PAGE = 50
RESOLUTIONS = ("blocked", "priority_override", "allowed")


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta
    bucket: str  # date_trunc unit
    step: timedelta


RANGES = {
    "1h": Range("1h", "last hour, per minute", timedelta(hours=1), "minute", timedelta(minutes=1)),
    "24h": Range("24h", "last 24 hours, per hour", timedelta(hours=24), "hour", timedelta(hours=1)),
    "30d": Range("30d", "last 30 days, per day", timedelta(days=30), "day", timedelta(days=1)),
}


def _filtered(query: Any, ticker: str | None, strategy: str | None,
              resolution: str | None) -> Any:  # fmt: skip
    if ticker:
        query = query.where(ConflictLog.ticker == ticker)
    if strategy:
        ids = select(Strategy.id).where(Strategy.name == strategy).scalar_subquery()
        query = query.where(
            (ConflictLog.requesting_strategy_id == ids) | (ConflictLog.owning_strategy_id == ids)
        )
    if resolution:
        query = query.where(ConflictLog.resolution == resolution)
    return query


def stats(session: Session) -> list[dict[str, Any]]:
    """Per strategy: as the challenger (blocked, override won, allowed) and as the owner
    (defended = a challenger was blocked, lost = overridden)."""
    mine: dict[int, dict[str, Any]] = {}
    as_requester = session.execute(
        select(ConflictLog.requesting_strategy_id, ConflictLog.resolution, func.count())
        .group_by(ConflictLog.requesting_strategy_id, ConflictLog.resolution)
    ).tuples()
    as_owner = session.execute(
        select(ConflictLog.owning_strategy_id, ConflictLog.resolution, func.count())
        .group_by(ConflictLog.owning_strategy_id, ConflictLog.resolution)
    ).tuples()
    for strategy in session.scalars(select(Strategy).order_by(Strategy.priority.desc())):
        mine[strategy.id] = {"name": strategy.name, "priority": strategy.priority,
                             "active": strategy.active, "blocked": 0, "priority_override": 0,
                             "allowed": 0, "defended": 0, "lost": 0}  # fmt: skip
    for sid, resolution, count in as_requester:
        if sid in mine:
            mine[sid][resolution] = int(count)
    for sid, resolution, count in as_owner:
        if sid in mine and resolution == "blocked":
            mine[sid]["defended"] += int(count)
        elif sid in mine and resolution == "priority_override":
            mine[sid]["lost"] += int(count)
    rows = list(mine.values())
    for row in rows:
        row["total"] = row["blocked"] + row["priority_override"] + row["allowed"]
    return rows


def over_time(session: Session, now: datetime, span: Range) -> dict[str, Any]:
    """Counts per bucket and resolution, shaped for a stacked bar chart."""
    bucket = func.date_trunc(span.bucket, ConflictLog.created_at)
    start_row = session.scalar(select(func.date_trunc(span.bucket, now - span.span + span.step)))
    start: datetime = start_row or now
    rows = session.execute(
        select(bucket, ConflictLog.resolution, func.count())
        .where(ConflictLog.created_at >= start)
        .group_by(bucket, ConflictLog.resolution)
    ).tuples()
    counts: dict[tuple[datetime, str], int] = {(b, r): int(c) for b, r, c in rows}
    buckets: list[dict[str, Any]] = []
    at = start
    while at <= now:
        buckets.append({"at": at, **{r: counts.get((at, r), 0) for r in RESOLUTIONS}})
        at += span.step
    peak = max([sum(b[r] for r in RESOLUTIONS) for b in buckets] + [1])
    return {"buckets": buckets, "peak": peak, "range": span, "total": sum(counts.values())}


def chart(data: dict[str, Any], width: int = 720, height: int = 180) -> dict[str, Any]:
    """Bar geometry for the inline SVG (computed here: templates stay free of arithmetic)."""
    buckets = data["buckets"]
    left, bottom, top = 34, 22, 8
    plot_w, plot_h = width - left - 6, height - bottom - top
    slot = plot_w / max(len(buckets), 1)
    bar_w = max(slot * 0.72, 1.0)
    peak = data["peak"]
    bars = []
    for index, b in enumerate(buckets):
        x = left + index * slot + (slot - bar_w) / 2
        y = top + plot_h
        for resolution in RESOLUTIONS:
            h = plot_h * b[resolution] / peak
            if h > 0:
                y -= h
                bars.append({"x": round(x, 2), "y": round(y, 2), "w": round(bar_w, 2),
                             "h": round(h, 2), "resolution": resolution, "count": b[resolution],
                             "at": b["at"]})  # fmt: skip
    ticks = sorted({0, peak // 2, peak}) if peak > 1 else [0, 1]
    grid = [{"y": round(top + plot_h - plot_h * t / peak, 2), "label": t} for t in ticks]
    every = max(len(buckets) // 6, 1)
    labels = [{"x": round(left + i * slot + slot / 2, 2), "at": b["at"]}
              for i, b in enumerate(buckets) if i % every == 0]  # fmt: skip
    return {"width": width, "height": height, "bars": bars, "grid": grid, "labels": labels,
            "left": left, "right": width - 6, "base": top + plot_h, "unit": data["range"].bucket}


def _read(rt: Any, ticker: str | None, strategy: str | None, resolution: str | None,
          before: int | None, span: Range) -> dict[str, Any]:  # fmt: skip
    query: Any = (
        select(ConflictLog, Order.state, Order.client_order_id)
        .outerjoin(Order, Order.id == ConflictLog.order_id)
        .order_by(ConflictLog.id.desc())
        .limit(PAGE + 1)
    )
    query = _filtered(query, ticker, strategy, resolution)
    if before is not None:
        query = query.where(ConflictLog.id < before)
    with rt.database.sessions() as session:
        now = db_now(session)
        rows = list(session.execute(query).tuples())
        names = [s for (s,) in session.execute(select(Strategy.name).order_by(Strategy.name))]
        data = over_time(session, now, span)
        context = {
            "now": now,
            "rows": rows[:PAGE],
            "older": rows[PAGE - 1][0].id if len(rows) > PAGE else None,
            "stats": stats(session),
            "chart": chart(data),
            "chart_total": data["total"],
            "ranges": RANGES.values(),
            "span": span,
            "strategy_names": names,
            "filters": {"ticker": ticker or "", "strategy": strategy or "",
                        "resolution": resolution or ""},
            "totals": dict(session.execute(select(ConflictLog.resolution, func.count())
                                           .group_by(ConflictLog.resolution)).tuples().all()),
        }  # fmt: skip
    return context


def clean_ticker(value: str | None) -> str | None:
    symbol = (value or "").strip().upper()
    return symbol if TICKER_PATTERN.match(symbol) else None


def clean_strategy(value: str | None) -> str | None:
    name = (value or "").strip()
    return name if STRATEGY_PATTERN.match(name) else None


@router.get("/conflicts", response_class=HTMLResponse, include_in_schema=False)
async def conflict_log(
    request: Request,
    _: Viewer,
    ticker: str | None = Query(None, max_length=16),
    strategy: str | None = Query(None, max_length=64),
    resolution: str | None = Query(None, max_length=20),
    before: int | None = Query(None, ge=1, le=2**63 - 1),
    range_: str = Query("24h", alias="range", max_length=4),
) -> Response:
    span = RANGES.get(range_, RANGES["24h"])
    chosen = resolution if resolution in RESOLUTIONS else None
    context = await run_in_threadpool(_read, request.app.state.runtime, clean_ticker(ticker),
                                      clean_strategy(strategy), chosen, before, span)  # fmt: skip
    context["paged"] = before is not None
    return render(request, "conflicts.html", context, page="conflicts", title="Conflicts")

