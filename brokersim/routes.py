"""The Alpaca Trading API v2 subset: orders, positions, account, fill activities, clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from brokersim.engine import Engine
from brokersim.ledger import fmt_ts
from brokersim.records import StoredOrder
from brokersim.specs import parse_order, parse_replace
from brokersim.store import DuplicateOrder
from brokersim.validate import ApiError, parse_choice, parse_int, parse_time
from brokersim.wire import account_json, activity_json, order_json, position_json

router = APIRouter(prefix="/v2")


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _nested(request: Request) -> bool:
    return request.query_params.get("nested", "").lower() in ("true", "1")


def _with_legs(engine: Engine, order: StoredOrder, nested: bool = True) -> dict[str, Any]:
    """An order as Alpaca returns it; a bracket/oco/oto parent carries its legs when nested."""
    if not nested or order.order_class == "simple" or order.parent_id is not None:
        return order_json(order)
    return order_json(order, engine.store.legs_of(order.id))


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, 40010000, "request body format is invalid") from None


_DUPLICATE = ApiError(422, 40010001, "client_order_id must be unique")


@router.post("/orders")
async def submit_order(request: Request) -> JSONResponse:
    spec = parse_order(await _json_body(request))
    engine = engine_of(request)
    try:
        order = engine.submit(spec)
    except DuplicateOrder:
        raise _DUPLICATE from None
    return JSONResponse(_with_legs(engine, order))


@router.patch("/orders/{order_id}")
async def replace_order(order_id: str, request: Request) -> JSONResponse:
    """Alpaca's replace: the old order becomes `replaced`, the answer is the new order."""
    spec = parse_replace(await _json_body(request))
    engine = engine_of(request)
    try:
        order = engine.replace(order_id, spec)
    except DuplicateOrder:
        raise _DUPLICATE from None
    return JSONResponse(_with_legs(engine, order))


@router.get("/orders")
async def list_orders(request: Request) -> JSONResponse:
    q = request.query_params
    symbols = [s.strip().upper() for s in q.get("symbols", "").split(",") if s.strip()]
    side = q.get("side")
    engine, nested = engine_of(request), _nested(request)
    orders = engine.store.list_orders(
        status=parse_choice(q.get("status"), "status", ("open", "closed", "all"), "open"),
        after=parse_time(q.get("after"), "after"),
        until=parse_time(q.get("until"), "until"),
        ascending=parse_choice(q.get("direction"), "direction", ("asc", "desc"), "desc") == "asc",
        limit=parse_int(q.get("limit"), "limit", 50, 1, 500),
        symbols=symbols or None,
        side=parse_choice(side, "side", ("buy", "sell"), "") or None,
        top_level_only=nested,
    )
    return JSONResponse([_with_legs(engine, o, nested) for o in orders])


@router.get("/orders:by_client_order_id")
async def get_by_client_order_id(request: Request) -> JSONResponse:
    client_order_id = request.query_params.get("client_order_id")
    if not client_order_id:
        raise ApiError(422, 40010001, "client_order_id is required")
    engine = engine_of(request)
    order = engine.store.get_by_client_order_id(client_order_id)
    if order is None:
        raise ApiError(404, 40410000, "order not found")
    return JSONResponse(_with_legs(engine, order, _nested(request)))


@router.get("/orders/{order_id}")
async def get_order(order_id: str, request: Request) -> JSONResponse:
    engine = engine_of(request)
    order = engine.store.get_order(order_id)
    if order is None:
        raise ApiError(404, 40410000, "order not found")
    return JSONResponse(_with_legs(engine, order, _nested(request)))


@router.delete("/orders/{order_id}", status_code=204)
async def cancel_order(order_id: str, request: Request) -> Response:
    engine_of(request).cancel(order_id)
    return Response(status_code=204)


def positions_json(engine: Engine) -> list[dict[str, Any]]:
    return [position_json(p, engine.book.price(p.symbol)) for p in engine.store.positions()]


@router.get("/positions")
async def list_positions(request: Request) -> JSONResponse:
    return JSONResponse(positions_json(engine_of(request)))


@router.get("/positions/{symbol}")
async def get_position(symbol: str, request: Request) -> JSONResponse:
    for position in positions_json(engine_of(request)):
        if position["symbol"] == symbol.upper():
            return JSONResponse(position)
    raise ApiError(404, 40410000, "position does not exist")


@router.get("/account")
async def account(request: Request) -> JSONResponse:
    engine = engine_of(request)
    values = [p.qty * engine.book.price(p.symbol) for p in engine.store.positions()]
    long_value = sum((v for v in values if v > 0), Decimal(0))
    short_value = sum((v for v in values if v < 0), Decimal(0))
    cash = Decimal(engine.store.meta("cash"))
    return JSONResponse(
        account_json(engine.store.meta("account_id"), cash, long_value, short_value)
    )


@router.get("/account/activities/FILL")
async def fill_activities(request: Request) -> JSONResponse:
    q = request.query_params
    engine = engine_of(request)
    ascending = parse_choice(q.get("direction"), "direction", ("asc", "desc"), "desc") == "asc"
    after_seq = None
    if token := q.get("page_token"):
        after_seq = engine.store.fill_seq(token)
        if after_seq is None:
            raise ApiError(422, 40010001, "invalid page_token")
    fills = engine.store.fills(
        after_seq=after_seq,
        ascending=ascending,
        limit=parse_int(q.get("page_size"), "page_size", 100, 1, 10_000),
        include_adjustments=False,
        after=parse_time(q.get("after"), "after"),
        until=parse_time(q.get("until"), "until"),
    )
    account_id = engine.store.meta("account_id")
    return JSONResponse([activity_json(f, account_id) for f in fills])


@router.get("/clock")
async def clock() -> JSONResponse:
    now = datetime.now(UTC)
    return JSONResponse(
        {
            "timestamp": fmt_ts(now),
            "is_open": True,
            "next_open": fmt_ts(now + timedelta(days=1)),
            "next_close": fmt_ts(now + timedelta(hours=6)),
        }
    )
