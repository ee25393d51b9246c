"""`arbiter positions`: each strategy's position per ticker."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from arbiter.commands import common
from core.errors import ArbiterError
from core.market_data import ReferencePrices
from core.positions import unrealized_pnl
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
    with_prices: Annotated[
        bool,
        typer.Option(
            "--prices", help="add the market's reference price and the unrealised P&L"
        ),
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
    columns: tuple[str, ...] = COLUMNS
    if with_prices:
        _add_prices(rows)
        columns = (*COLUMNS[:-1], "market_price", "unrealized_pnl", COLUMNS[-1])
    common.show_rows(rows, as_json=as_json, columns=columns, empty="no positions")


def _add_prices(rows: list[common.Row]) -> None:
    """Reference prices from the market-data port (one question per ticker); a ticker without
    a price, or a source that cannot be reached, shows none rather than a made-up figure."""
    from adapters.market_data import AlpacaMarketData

    prices = ReferencePrices(AlpacaMarketData.from_settings(common.settings()))
    for row in rows:
        try:
            price = prices.price(row["ticker"])
        except ArbiterError:
            price = None
        row["market_price"] = price
        row["unrealized_pnl"] = unrealized_pnl(row["quantity"], row["avg_cost"], price)
