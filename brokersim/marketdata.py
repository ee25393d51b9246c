"""Alpaca's market-data v2 routes for the latest stock trade and quote, served from the seeded
price path, under the same auth headers. alpaca-py's StockHistoricalDataClient calls only the
multi-symbol forms (/v2/stocks/trades/latest?symbols=A,B&feed=iex); the single-symbol forms are
served too. A symbol without data (the `no_price` knob) is left out of a multi-symbol answer,
as Alpaca leaves out symbols it has nothing for; a single-symbol request for it gets a 404.

A trade is at the reference price; a quote is one cent either side of it (mid = the price)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from brokersim.engine import Engine
from brokersim.ledger import fmt_ts
from brokersim.validate import SYMBOL_RE, ApiError

router = APIRouter(prefix="/v2/stocks")

FEEDS = ("sip", "iex", "delayed_sip", "boats", "overnight", "otc")
_CENT = Decimal("0.01")


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _check_feed(request: Request) -> None:
    feed = request.query_params.get("feed")
    if feed is not None and feed not in FEEDS:
        raise ApiError(400, 40010001, f"invalid feed: {feed!r}")


def _symbol(raw: str) -> str:
    symbol = raw.strip().upper()
    if not SYMBOL_RE.match(symbol):
        raise ApiError(400, 40010001, f"invalid symbol: {raw!r}")
    return symbol


def _symbols(request: Request) -> list[str]:
    raw = request.query_params.get("symbols", "")
    symbols = [_symbol(s) for s in raw.split(",") if s.strip()]
    if not symbols:
        raise ApiError(400, 40010001, "symbols is required")
    return symbols


def price_of(engine: Engine, symbol: str) -> Decimal | None:
    """The reference price, or None for a symbol the no_price knob blanks out."""
    patterns = engine.faults.settings.no_price
    if any(fnmatchcase(symbol, pattern.upper()) for pattern in patterns):
        return None
    return engine.book.price(symbol)


def _trade(engine: Engine, price: Decimal) -> dict[str, Any]:
    return {
        "t": fmt_ts(datetime.now(UTC)),
        "x": "V",
        "p": float(price),
        "s": 100,
        "c": ["@"],
        "i": engine.book.tick + 1,
        "z": "C",
    }


def _quote(price: Decimal) -> dict[str, Any]:
    return {
        "t": fmt_ts(datetime.now(UTC)),
        "ax": "V",
        "ap": float(price + _CENT),
        "as": 1,
        "bx": "V",
        "bp": float(max(price - _CENT, _CENT)),
        "bs": 1,
        "c": ["R"],
        "z": "C",
    }


def _latest(request: Request, kind: str) -> dict[str, Any]:
    _check_feed(request)
    engine = _engine(request)
    found: dict[str, Any] = {}
    for symbol in _symbols(request):
        price = price_of(engine, symbol)
        if price is not None:
            found[symbol] = _trade(engine, price) if kind == "trades" else _quote(price)
    return {kind: found}


def _single(request: Request, symbol: str, kind: str) -> dict[str, Any]:
    _check_feed(request)
    engine = _engine(request)
    symbol = _symbol(symbol)
    price = price_of(engine, symbol)
    if price is None:
        raise ApiError(404, 40410000, f"no {kind} found for {symbol}")
    data = _trade(engine, price) if kind == "trade" else _quote(price)
    return {"symbol": symbol, kind: data}


@router.get("/trades/latest")
async def latest_trades(request: Request) -> JSONResponse:
    return JSONResponse(_latest(request, "trades"))


@router.get("/quotes/latest")
async def latest_quotes(request: Request) -> JSONResponse:
    return JSONResponse(_latest(request, "quotes"))


@router.get("/{symbol}/trades/latest")
async def latest_trade(symbol: str, request: Request) -> JSONResponse:
    return JSONResponse(_single(request, symbol, "trade"))


@router.get("/{symbol}/quotes/latest")
async def latest_quote(symbol: str, request: Request) -> JSONResponse:
    return JSONResponse(_single(request, symbol, "quote"))
