"""Admin endpoints for tests and operators: fault knobs, all orders and fills, positions changed
behind Arbiter's back, forced fills, pinned prices, pausing the engine, ending the session."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from brokersim.ledger import fmt_dec, fmt_ts
from brokersim.routes import engine_of, positions_json
from brokersim.validate import ApiError, invalid
from brokersim.wire import order_json

router = APIRouter(prefix="/admin")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, 40010000, "request body format is invalid") from None
    if not isinstance(body, dict):
        raise ApiError(400, 40010000, "request body must be a JSON object")
    return body


def _decimal(value: object, name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise invalid(f"invalid {name}") from None
    if not number.is_finite():
        raise invalid(f"invalid {name}")
    return number


@router.get("/faults")
async def get_faults(request: Request) -> JSONResponse:
    return JSONResponse(engine_of(request).faults.settings.model_dump())


@router.post("/faults")
async def set_faults(request: Request) -> JSONResponse:
    try:
        settings = engine_of(request).faults.update(await _body(request))
    except ValidationError as exc:
        raise invalid(str(exc).splitlines()[0] + ": " + exc.errors()[0]["msg"]) from None
    if settings.stream_down:
        request.app.state.hub.drop_all()
    return JSONResponse(settings.model_dump())


@router.get("/stream")
async def stream_state(request: Request) -> JSONResponse:
    """How many trade_updates websocket connections are open."""
    hub = request.app.state.hub
    return JSONResponse({"connections": hub.count(), "listening": hub.listening()})


@router.post("/stream/drop")
async def drop_stream(request: Request) -> JSONResponse:
    """Close every trade_updates websocket connection now (clients may reconnect at once)."""
    return JSONResponse({"dropped": request.app.state.hub.drop_all()})


@router.post("/pause-fills")
async def pause_fills(request: Request) -> JSONResponse:
    return JSONResponse(engine_of(request).faults.update({"fills_paused": True}).model_dump())


@router.post("/resume-fills")
async def resume_fills(request: Request) -> JSONResponse:
    return JSONResponse(engine_of(request).faults.update({"fills_paused": False}).model_dump())


@router.get("/orders")
async def all_orders(request: Request) -> JSONResponse:
    """Every order ever accepted, oldest first; ?client_order_id= narrows to one id."""
    orders = engine_of(request).store.list_orders(
        ascending=True, client_order_id=request.query_params.get("client_order_id")
    )
    return JSONResponse([order_json(o) for o in orders])


@router.get("/fills")
async def all_fills(request: Request) -> JSONResponse:
    fills = engine_of(request).store.fills(order_id=request.query_params.get("order_id"))
    return JSONResponse(
        [
            {
                "id": f.id,
                "order_id": f.order_id,
                "symbol": f.symbol,
                "side": f.side,
                "qty": fmt_dec(f.qty),
                "price": fmt_dec(f.price),
                "kind": f.kind,
                "transaction_time": f.transaction_time,
            }
            for f in fills
        ]
    )


@router.post("/positions")
async def adjust_position(request: Request) -> JSONResponse:
    """{"symbol", "qty": signed change} or {"symbol", "target_qty"}; optional "price"."""
    body = await _body(request)
    engine = engine_of(request)
    symbol = str(body.get("symbol", "")).upper()
    if not symbol:
        raise invalid("symbol is required")
    held = {p.symbol: p.qty for p in engine.store.positions()}.get(symbol, Decimal(0))
    if "target_qty" in body:
        delta = _decimal(body["target_qty"], "target_qty") - held
    elif "qty" in body:
        delta = _decimal(body["qty"], "qty")
    else:
        raise invalid("qty or target_qty is required")
    price = _decimal(body["price"], "price") if body.get("price") is not None else None
    fill_id = None
    if delta != 0:
        fill_price = price if price is not None else engine.book.price(symbol)
        fill_id = engine.store.adjust_position(symbol, delta, fill_price, datetime.now(UTC))
    return JSONResponse({"fill_id": fill_id, "positions": positions_json(engine)})


@router.post("/fill/{order_id}")
async def force_fill(order_id: str, request: Request) -> JSONResponse:
    body = await _body(request)
    price = _decimal(body["price"], "price") if body.get("price") is not None else None
    return JSONResponse(order_json(engine_of(request).fill_now(order_id, price)))


@router.get("/prices")
async def prices(request: Request) -> JSONResponse:
    engine = engine_of(request)
    for symbol in request.query_params.get("symbols", "").split(","):
        if symbol.strip():
            engine.book.price(symbol.strip().upper())
    return JSONResponse({s: fmt_dec(p) for s, p in engine.book.snapshot().items()})


@router.post("/prices")
async def pin_price(request: Request) -> JSONResponse:
    """{"symbol", "price"}: pin a reference price (null releases it to the random walk)."""
    body = await _body(request)
    symbol = str(body.get("symbol", "")).upper()
    if not symbol:
        raise invalid("symbol is required")
    raw = body.get("price")
    price = None if raw is None else _decimal(raw, "price")
    if price is not None and price <= 0:
        raise invalid("price must be > 0")
    engine = engine_of(request)
    engine.book.pin(symbol, price)
    return JSONResponse({"symbol": symbol, "price": fmt_dec(engine.book.price(symbol))})


@router.post("/session-end")
async def session_end(request: Request) -> JSONResponse:
    """Expire every open day order now, as the close of the trading day would."""
    now = fmt_ts(datetime.now(UTC))
    expired = engine_of(request).store.expire_day_orders(now, everything=True)
    return JSONResponse({"expired": expired})
