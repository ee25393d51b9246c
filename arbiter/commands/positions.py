"""`arbiter positions`: each strategy's position per ticker."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from arbiter.commands import common
from db import strategies as strategy_store
from db.models import Position, Strategy

COLUMNS = ("strategy", "ticker", "quantity", "avg_cost", "realized_pnl", "updated_at")


def position_row(row: Position) -> common.Row:
    return {
        "strategy": row.strategy.name,
        "ticker": row.ticker,
        "quantity": row.quantity,
        "avg_cost": row.avg_cost,
        "realized_pnl": row.realized_pnl,
        "updated_at": row.updated_at,
    }


def positions(
    strategy: Annotated[str | None, typer.Option(help="only this strategy")] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="include closed (zero) positions")
    ] = False,
    as_json: common.AsJson = False,
) -> None:
    """Open positions by strategy and ticker (closed ones with --all)."""
    query = (
        select(Position)
        .join(Strategy, Strategy.id == Position.strategy_id)
        .order_by(Strategy.name, Position.ticker)
    )
    if not show_all:
        query = query.where(Position.quantity != 0)
    with common.unit_of_work() as uow:
        if strategy is not None:
            query = query.where(
                Position.strategy_id == strategy_store.require_strategy(uow.session, strategy).id
            )
        rows = [position_row(p) for p in uow.session.scalars(query)]
    common.show_rows(rows, as_json=as_json, columns=COLUMNS, empty="no positions")
