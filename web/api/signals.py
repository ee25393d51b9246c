"""POST /api/v1/signals: HTTP intake for strategies not written in Python.

The same checks and the same enqueue path as the Python client (`strategy_client`): the
shape is validated first (422 naming the field, nothing enqueued), the client_order_id is
derived from strategy and signal_id, so sending a signal again answers the same id and creates
nothing new. The token authenticates the sender; a trade token bound to a strategy may send
only that strategy's signals.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from core.errors import InvalidSignal
from core.signals import Signal
from db.models import Order
from web.api.common import respond
from web.auth import TradeAccess
from web.runtime import WebRuntime, runtime_of

router = APIRouter(prefix="/signals", tags=["signals"])

MAX_BODY = 16_384

_SIGNAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["strategy", "signal_id", "ticker", "side", "quantity"],
    "additionalProperties": False,
    "properties": {
        "strategy": {"type": "string", "example": "trading"},
        "signal_id": {"type": "string", "description": "your idempotency key",
                      "example": "tr-2026-11-29-aapl-1"},
        "ticker": {"type": "string", "example": "AAPL"},
        "side": {"type": "string", "enum": ["buy", "sell"]},
        "quantity": {"type": ["string", "number"], "example": "10"},
        "order_type": {"type": "string", "enum": ["market", "limit"], "default": "market"},
        "limit_price": {"type": ["string", "number", "null"]},
        "time_in_force": {"type": "string", "default": "day"},
    },
}  # fmt: skip


def _enqueue(rt: WebRuntime, signal: Signal) -> tuple[str, bool]:
    """(client_order_id, enqueued): a signal already recorded is not enqueued again."""
    with rt.database.sessions() as session:
        known = session.scalar(
            select(Order.id).where(Order.client_order_id == signal.client_order_id)
        )
    if known is not None:
        return signal.client_order_id, False
    message = signal.to_message()
    client_order_id = rt.signal_client.submit_signal(
        message["strategy"], message["ticker"], message["side"], message["quantity"],
        signal_id=message["signal_id"], order_type=message["order_type"],
        limit_price=message["limit_price"], time_in_force=message["time_in_force"],
    )  # fmt: skip
    return client_order_id, True


@router.post(
    "",
    status_code=202,
    summary="Send a signal; answers its client_order_id (the same for the same signal_id)",
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": _SIGNAL_SCHEMA}}}},
    responses={202: {"description": "accepted: the pipeline takes it from here"},
               422: {"description": "malformed: `field` names the culprit; nothing enqueued"}},
)  # fmt: skip
async def submit_signal(request: Request, who: TradeAccess) -> JSONResponse:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(413, f"a signal is at most {MAX_BODY} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _invalid("signal", "body is not JSON")
    try:
        signal = Signal.parse(data)
    except InvalidSignal as exc:
        return _invalid(exc.field, exc.message)
    if who.strategy is not None and signal.strategy != who.strategy:
        raise HTTPException(403, f"this token may send signals for {who.strategy} only")
    if await run_in_threadpool(runtime_of(request).signing_key, signal.strategy) is None:
        return _invalid("strategy", f"unknown strategy {signal.strategy!r}")
    client_order_id, enqueued = await run_in_threadpool(_enqueue, runtime_of(request), signal)
    return respond({"client_order_id": client_order_id, "strategy": signal.strategy,
                    "signal_id": signal.signal_id, "enqueued": enqueued,
                    "order": f"/api/v1/orders/{client_order_id}"}, 202)  # fmt: skip


def _invalid(field: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": f"{field}: {message}", "field": field}, status_code=422)
