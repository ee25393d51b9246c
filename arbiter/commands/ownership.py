"""`arbiter ownership`: who owns which ticker, and manual release of an owner."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer
from sqlalchemy import select

from arbiter.commands import common
from db.models import TickerOwnership
from service_layer import ownership_moves
from strategy_client.client import SignalClient

app = typer.Typer(
    help="Ticker ownership: `arbiter ownership` lists owners, `ownership release T` frees a "
    "flat one, `ownership transfer T --to S` moves one with its position.",
    invoke_without_command=True,
)

COLUMNS = ("ticker", "strategy", "locked_until", "acquired_at")
RELEASE_KEYS = ("released_at", "release_reason")
HISTORY_COLUMNS = (*COLUMNS, *RELEASE_KEYS)


def ownership_row(row: TickerOwnership, now: datetime) -> common.Row:
    return {
        "ticker": row.ticker,
        "strategy": row.strategy.name,
        "locked_until": row.locked_until,
        "locked": row.released_at is None and row.locked_until is not None
        and row.locked_until > now,
        "acquired_at": row.acquired_at,
        "acquired_by_order_id": row.acquired_by_order_id,
        "released_at": row.released_at,
        "release_reason": row.release_reason,
    }  # fmt: skip


@app.callback()
def list_ownership(
    ctx: typer.Context,
    history: Annotated[bool, typer.Option("--history", help="include released owners")] = False,
    as_json: common.AsJson = False,
) -> None:
    """Live owners by ticker (with --history: every claim, newest first)."""
    if ctx.invoked_subcommand is not None:
        return
    query = select(TickerOwnership)
    if history:
        query = query.order_by(TickerOwnership.ticker, TickerOwnership.id.desc())
    else:
        query = query.where(TickerOwnership.released_at.is_(None)).order_by(TickerOwnership.ticker)
    now = datetime.now(UTC)
    with common.unit_of_work() as uow:
        rows = [ownership_row(r, now) for r in uow.session.scalars(query)]
    if not history:  # live owners have nothing released to show
        rows = [{k: v for k, v in r.items() if k not in RELEASE_KEYS} for r in rows]
    common.show_rows(
        rows, as_json=as_json, columns=HISTORY_COLUMNS if history else COLUMNS,
        empty="no ticker is owned",
    )  # fmt: skip


@app.command("release")
def release_ticker(
    ticker: Annotated[str, typer.Argument(help="e.g. NVDA")],
    reason: Annotated[str, typer.Option(help="recorded on the release")] = "released by operator",
    liquidate: Annotated[
        bool,
        typer.Option(
            "--liquidate",
            help="sell the owner's position (a market sell through the pipeline, as the "
            "owner); the ownership ends when it is flat",
        ),
    ] = False,
) -> None:
    """Release TICKER's owner now, lock or no lock, when its position is flat; refused while
    it holds shares (unless --liquidate)."""
    with common.unit_of_work() as uow:
        if liquidate:
            move = ownership_moves.begin_liquidation(uow.session, ticker, reason)
        else:
            move = ownership_moves.release_ownership(uow.session, ticker, reason)
        uow.commit()
    if liquidate and move.quantity:
        client = SignalClient(common.redis_url())
        try:
            coid = client.submit_signal(
                move.from_strategy,
                move.ticker,
                "sell",
                move.quantity,
                signal_id=f"liquidate-{move.ticker}-{uuid.uuid4().hex[:12]}",
            )
        finally:
            client.close()
        typer.echo(f"{move.message} (order {coid})")
        return
    typer.echo(move.message)


@app.command("transfer")
def transfer_ticker(
    ticker: Annotated[str, typer.Argument(help="e.g. NVDA")],
    to: Annotated[str, typer.Option("--to", help="the strategy that takes over")],
    reason: Annotated[str, typer.Option(help="recorded on the transfer")] = "operator transfer",
) -> None:
    """Move TICKER's ownership and its position (quantity and average cost) to --to."""
    with common.unit_of_work() as uow:
        move = ownership_moves.transfer_ownership(uow.session, ticker, to, reason)
        uow.commit()
    typer.echo(move.message)
