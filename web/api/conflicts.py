"""/api/v1/conflicts: the conflict log with filters, and statistics by resolution per strategy
and per day."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from sqlalchemy import Date, cast, func, or_, select

from db.models import ConflictLog, Order, Strategy
from web.api.common import (
    Cursor,
    Limit,
    Since,
    decode_cursor,
    page,
    respond,
    strategy_param,
    ticker_param,
)
from web.auth import ReadAccess
from web.runtime import Rt

router = APIRouter(prefix="/conflicts", tags=["conflicts"])


class Resolution(StrEnum):
    ALLOWED = "allowed"
    BLOCKED = "blocked"
    PRIORITY_OVERRIDE = "priority_override"


TickerQuery = Annotated[str | None, Query(max_length=16, description="e.g. NVDA")]
StrategyQuery = Annotated[
    str | None, Query(max_length=64, description="requesting or owning strategy")
]


def conflict_row(row: ConflictLog, order: Order | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": row.id,
        "ticker": row.ticker,
        "requesting_strategy": row.requesting_strategy.name,
        "requesting_priority": row.requesting_priority,
        "owning_strategy": row.owning_strategy.name,
        "owning_priority": row.owning_priority,
        "action": row.action,
        "resolution": row.resolution,
        "reasoning": row.reasoning,
        "order_id": row.order_id,
        "created_at": row.created_at,
    }
    if order is not None:
        item["order"] = {
            "id": order.id,
            "client_order_id": order.client_order_id,
            "side": order.side,
            "quantity": order.quantity,
            "state": order.state,
            "reason": order.reason,
        }
    return item


def _filters(
    session: Any, ticker: str | None, strategy: str | None, resolution: Resolution | None,
    since: datetime | None,
) -> list[Any]:  # fmt: skip
    where: list[Any] = []
    if ticker is not None:
        where.append(ConflictLog.ticker == ticker_param(ticker))
    if strategy is not None:
        strategy_id = session.scalar(
            select(Strategy.id).where(Strategy.name == strategy_param(strategy))
        )
        if strategy_id is None:
            raise HTTPException(404, f"no strategy {strategy!r}")
        where.append(or_(ConflictLog.requesting_strategy_id == strategy_id,
                         ConflictLog.owning_strategy_id == strategy_id))  # fmt: skip
    if resolution is not None:
        where.append(ConflictLog.resolution == resolution.value)
    if since is not None:
        where.append(ConflictLog.created_at >= since)
    return where


@router.get("", summary="Conflict decisions, newest first, each with both sides, the reasoning "
            "and the resulting order")  # fmt: skip
def list_conflicts(
    _: ReadAccess,
    rt: Rt,
    ticker: TickerQuery = None,
    strategy: StrategyQuery = None,
    resolution: Resolution | None = None,
    since: Since = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JSONResponse:
    before = decode_cursor(cursor)
    with rt.database.sessions() as session:
        query = (
            select(ConflictLog, Order)
            .outerjoin(Order, Order.id == ConflictLog.order_id)
            .where(*_filters(session, ticker, strategy, resolution, since))
        )
        if before is not None:
            query = query.where(ConflictLog.id < before)
        rows = session.execute(query.order_by(ConflictLog.id.desc()).limit(limit + 1)).tuples()
        items = [conflict_row(c, o) for c, o in rows]
    return page(items, limit)


@router.get("/stats", summary="Counts by resolution per strategy and per day")
def conflict_stats(
    _: ReadAccess,
    rt: Rt,
    ticker: TickerQuery = None,
    strategy: StrategyQuery = None,
    since: Since = None,
) -> JSONResponse:
    with rt.database.sessions() as session:
        where = _filters(session, ticker, strategy, None, since)
        per_strategy = session.execute(
            select(Strategy.name, ConflictLog.resolution, func.count())
            .join(Strategy, Strategy.id == ConflictLog.requesting_strategy_id)
            .where(*where)
            .group_by(Strategy.name, ConflictLog.resolution)
        ).tuples()
        by_strategy: dict[str, dict[str, int]] = {}
        totals = {r.value: 0 for r in Resolution}
        for name, resolution, count in per_strategy:
            by_strategy.setdefault(name, {r.value: 0 for r in Resolution})[resolution] = count
            totals[resolution] += count
        day = cast(func.timezone("UTC", ConflictLog.created_at), Date)
        per_day = session.execute(
            select(day, ConflictLog.resolution, func.count())
            .where(*where)
            .group_by(day, ConflictLog.resolution)
            .order_by(day)
        ).tuples()
        by_day: dict[str, dict[str, int]] = {}
        for date, resolution, count in per_day:
            by_day.setdefault(date.isoformat(), {r.value: 0 for r in Resolution})[resolution] = (
                count
            )
    return respond({
        "totals": totals,
        "by_strategy": [{"strategy": k, **v} for k, v in sorted(by_strategy.items())],
        "by_day": [{"day": k, **v} for k, v in by_day.items()],
        "time_zone": "UTC",
    })  # fmt: skip
