"""`arbiter ownership`: who owns which ticker, and manual release of an owner."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from sqlalchemy import select

from arbiter.commands import common
from core.errors import InvalidInput
from core.signals import TICKER_PATTERN, is_name
from db.models import TickerOwnership
from db.ownership import current_owner, lock_ticker, release

app = typer.Typer(
    help="Ticker ownership: `arbiter ownership` lists owners, `ownership release T` frees one.",
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
) -> None:
    """Release TICKER's live owner now, lock or no lock."""
    symbol = ticker.strip().upper()
    with common.unit_of_work() as uow:
        if not is_name(TICKER_PATTERN, symbol):
            raise InvalidInput(f"{ticker!r} is not a ticker")
        lock_ticker(uow.session, symbol)
        row = current_owner(uow.session, symbol)
        if row is None:
            raise InvalidInput(f"{symbol} has no owner")
        owner = row.strategy.name
        release(uow.session, row, reason)
        uow.commit()
    typer.echo(f"released {symbol} from {owner}")
