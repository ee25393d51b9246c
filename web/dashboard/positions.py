"""Positions and P&L per strategy that add up: realised P&L, unrealised where a reference
price exists, and an "unattributed" row per ticker for shares the brokerage holds that no
strategy accounts for (or the reverse), so every ticker's total equals the brokerage account.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from core.errors import ArbiterError
from db.models import Position, Strategy
from web.dashboard.health import short_error
from web.dashboard.overview import db_now
from web.dashboard.render import Viewer, render

router = APIRouter()
UNATTRIBUTED = "unattributed"
ZERO = Decimal(0)


@dataclass
class Line:
    strategy: str
    ticker: str
    quantity: Decimal
    avg_cost: Decimal | None
    realized: Decimal
    price: Decimal | None = None

    @property
    def unrealized(self) -> Decimal | None:
        if self.price is None or self.avg_cost is None or self.quantity == 0:
            return None if self.quantity else ZERO
        return (self.price - self.avg_cost) * self.quantity

    @property
    def market_value(self) -> Decimal | None:
        return None if self.price is None else self.price * self.quantity


def account_mode(url: str) -> str:
    """Which account the numbers come from: they are never mixed (one account per install)."""
    if "paper-api." in url:
        return "paper"
    if "api.alpaca.markets" in url:
        return "live"
    return "simulator"


def _prices(rt: Any, tickers: set[str]) -> dict[str, Decimal | None]:
    source = getattr(rt, "reference_prices", None)
    prices: dict[str, Decimal | None] = {}
    for ticker in sorted(tickers):
        try:
            prices[ticker] = source.price(ticker) if source is not None else None
        except (ArbiterError, OSError):
            prices[ticker] = None
    return prices


def _read(rt: Any) -> dict[str, Any]:
    with rt.database.sessions() as session:
        now = db_now(session)
        rows = list(
            session.execute(
                select(Position, Strategy.name)
                .join(Strategy, Strategy.id == Position.strategy_id)
                .where((Position.quantity != 0) | (Position.realized_pnl != 0))
                .order_by(Strategy.priority.desc(), Strategy.name, Position.ticker)
            ).tuples()
        )
    lines = [Line(name, p.ticker, p.quantity, p.avg_cost, p.realized_pnl) for p, name in rows]
    broker_error = None
    broker_as_of = datetime.now(UTC)
    held: dict[str, Decimal] = {}
    try:
        for bp in rt.brokerage.list_positions():
            held[bp.symbol] = bp.quantity
    except (ArbiterError, OSError) as exc:
        broker_error = short_error(exc)
    attributed: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        attributed[line.ticker] += line.quantity
    if broker_error is None:
        for ticker in sorted(set(held) | set(attributed)):
            gap = held.get(ticker, ZERO) - attributed.get(ticker, ZERO)
            if gap != 0:
                lines.append(Line(UNATTRIBUTED, ticker, gap, None, ZERO))
    prices = _prices(rt, {line.ticker for line in lines if line.quantity})
    for line in lines:
        line.price = prices.get(line.ticker)
        if line.avg_cost is None and line.price is not None:
            line.avg_cost = line.price  # unattributed shares: no cost basis, no P&L claimed
    groups: dict[str, list[Line]] = defaultdict(list)
    for line in lines:
        groups[line.strategy].append(line)
    summaries = [_summary(name, group) for name, group in groups.items()]
    tickers = sorted({line.ticker for line in lines if line.quantity} | set(held))
    check = [
        {"ticker": t, "strategies": sum((ln.quantity for ln in lines if ln.ticker == t
                                         and ln.strategy != UNATTRIBUTED), ZERO),
         "unattributed": sum((ln.quantity for ln in lines if ln.ticker == t
                              and ln.strategy == UNATTRIBUTED), ZERO),
         "brokerage": held.get(t) if broker_error is None else None}
        for t in tickers
    ]  # fmt: skip
    return {
        "now": now,
        "summaries": summaries,
        "total": _summary("Total", lines),
        "check": check,
        "broker_error": broker_error,
        "broker_as_of": broker_as_of,
        "priced": any(p is not None for p in prices.values()),
        "mode": account_mode(rt.settings.brokerage_url),
    }


def _summary(name: str, lines: list[Line]) -> dict[str, Any]:
    unrealized = [ln.unrealized for ln in lines]
    values = [ln.market_value for ln in lines if ln.quantity]
    return {
        "name": name,
        "lines": lines,
        "realized": sum((ln.realized for ln in lines), ZERO),
        "unrealized": None if any(u is None for u in unrealized)
        else sum((u for u in unrealized if u is not None), ZERO),
        "market_value": None if any(v is None for v in values)
        else sum((v for v in values if v is not None), ZERO),
        "unattributed": name == UNATTRIBUTED,
    }  # fmt: skip


@router.get("/positions", response_class=HTMLResponse, include_in_schema=False)
async def positions_page(request: Request, _: Viewer) -> Response:
    context = await run_in_threadpool(_read, request.app.state.runtime)
    return render(request, "positions.html", context, page="positions", title="Positions & P&L")
