"""`arbiter conflicts`: the conflict log, newest first, with each decision's reasoning."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from arbiter.commands import common
from db.models import ConflictLog

COLUMNS = (
    "created_at", "ticker", "requesting_strategy", "owning_strategy", "action", "resolution",
    "reasoning",
)  # fmt: skip


def conflict_row(row: ConflictLog) -> common.Row:
    return {
        "id": row.id,
        "ticker": row.ticker,
        "requesting_strategy": row.requesting_strategy.name,
        "owning_strategy": row.owning_strategy.name,
        "requesting_priority": row.requesting_priority,
        "owning_priority": row.owning_priority,
        "action": row.action,
        "resolution": row.resolution,
        "reasoning": row.reasoning,
        "created_at": row.created_at,
        "order_id": row.order_id,
    }


def conflicts(
    ticker: Annotated[str | None, typer.Option(help="only this ticker")] = None,
    limit: common.Limit = 50,
    as_json: common.AsJson = False,
) -> None:
    """Conflict decisions (allowed, blocked, priority_override), newest first."""
    query = select(ConflictLog).order_by(ConflictLog.id.desc()).limit(limit)
    if ticker is not None:
        query = query.where(ConflictLog.ticker == ticker.strip().upper())
    with common.unit_of_work() as uow:
        rows = [conflict_row(c) for c in uow.session.scalars(query)]
    common.show_rows(rows, as_json=as_json, columns=COLUMNS, empty="no conflicts")
