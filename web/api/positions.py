"""/api/v1/positions: per strategy and ticker, with realised P&L and per-strategy totals."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select

from db.models import Position, Strategy
from web.api.common import respond, strategy_param, ticker_param
from web.auth import ReadAccess
from web.runtime import Rt

router = APIRouter(prefix="/positions", tags=["positions"])


def position_row(row: Position) -> dict[str, Any]:
    return {
        "strategy": row.strategy.name,
        "ticker": row.ticker,
        "quantity": row.quantity,
        "avg_cost": row.avg_cost,
        "cost_basis": row.quantity * row.avg_cost,
        "realized_pnl": row.realized_pnl,
        "updated_at": row.updated_at,
    }


@router.get("", summary="Positions by strategy and ticker with realised P&L, and totals")
def list_positions(
    _: ReadAccess,
    rt: Rt,
    strategy: Annotated[str | None, Query(max_length=64)] = None,
    ticker: Annotated[str | None, Query(max_length=16)] = None,
    closed: Annotated[bool, Query(description="include closed (zero) positions")] = False,
) -> JSONResponse:
    query = (
        select(Position)
        .join(Strategy, Strategy.id == Position.strategy_id)
        .order_by(Strategy.name, Position.ticker)
    )
    if not closed:
        query = query.where(Position.quantity != 0)
    if ticker is not None:
        query = query.where(Position.ticker == ticker_param(ticker))
    with rt.database.sessions() as session:
        if strategy is not None:
            name = strategy_param(strategy)
            if session.scalar(select(Strategy.id).where(Strategy.name == name)) is None:
                raise HTTPException(404, f"no strategy {strategy!r}")
            query = query.where(Strategy.name == name)
        rows = list(session.scalars(query))
        items = [position_row(p) for p in rows]
        # Realised P&L also lives on closed positions: totals always count every row.
        total_query = select(Strategy.name, Position.realized_pnl).join(
            Strategy, Strategy.id == Position.strategy_id
        )
        if strategy is not None:
            total_query = total_query.where(Strategy.name == strategy)
        if ticker is not None:
            total_query = total_query.where(Position.ticker == ticker_param(ticker))
        totals: dict[str, Decimal] = {}
        for name, pnl in session.execute(total_query).tuples():
            totals[name] = totals.get(name, Decimal(0)) + pnl
    return respond({
        "items": items,
        "totals": [{"strategy": k, "realized_pnl": v} for k, v in sorted(totals.items())],
        "realized_pnl": sum(totals.values(), Decimal(0)),
    })  # fmt: skip
