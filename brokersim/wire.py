"""Stored rows rendered as Alpaca Trading API v2 JSON: every field alpaca-py's models require,
ids as UUIDs, timestamps in RFC 3339, numbers as strings."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from brokersim.ledger import fmt_dec
from brokersim.records import StoredFill, StoredOrder, StoredPosition, Update

_ASSET_NS = uuid.UUID("6f1e6f3c-7b0e-4b8e-9a59-5b3c2a1d0e42")


def asset_id(symbol: str) -> str:
    return str(uuid.uuid5(_ASSET_NS, symbol))


def _num(value: Decimal | None) -> str | None:
    return None if value is None else fmt_dec(value)


def order_json(order: StoredOrder, legs: list[StoredOrder] | None = None) -> dict[str, Any]:
    """An order as Alpaca returns it; `legs` (a bracket/oco/oto's other orders) when nested."""
    return {
        "id": order.id,
        "client_order_id": order.client_order_id,
        "created_at": order.submitted_at,
        "updated_at": order.updated_at,
        "submitted_at": order.submitted_at,
        "filled_at": order.filled_at,
        "expired_at": order.expired_at,
        "expires_at": order.expires_at,
        "canceled_at": order.canceled_at,
        "failed_at": order.failed_at,
        "replaced_at": order.replaced_at,
        "replaced_by": order.replaced_by,
        "replaces": order.replaces,
        "asset_id": asset_id(order.symbol),
        "symbol": order.symbol,
        "asset_class": "us_equity",
        "notional": None,
        "qty": fmt_dec(order.qty),
        "filled_qty": fmt_dec(order.filled_qty),
        "filled_avg_price": _num(order.filled_avg_price),
        "order_class": order.order_class,
        "order_type": order.type,
        "type": order.type,
        "side": order.side,
        "position_intent": None,
        "time_in_force": order.time_in_force,
        "limit_price": _num(order.limit_price),
        "stop_price": _num(order.stop_price),
        "status": order.status,
        "extended_hours": order.extended_hours,
        "legs": None if legs is None else [order_json(leg) for leg in legs],
        "trail_percent": _num(order.trail_percent),
        "trail_price": _num(order.trail_price),
        "hwm": _num(order.hwm),
        "source": "brokersim",
    }


def trade_update_json(update: Update, order: dict[str, Any]) -> dict[str, Any]:
    """One message of the trade_updates stream, as Alpaca's trading websocket sends it."""
    data: dict[str, Any] = {"event": update.event, "timestamp": update.timestamp, "order": order}
    if update.execution_id is not None:
        data["execution_id"] = update.execution_id
    for name in ("price", "qty", "position_qty"):
        value = getattr(update, name)
        if value is not None:
            data[name] = fmt_dec(value)
    return {"stream": "trade_updates", "data": data}


def position_json(position: StoredPosition, price: Decimal) -> dict[str, Any]:
    qty = position.qty
    cost = qty * position.avg_entry_price
    value = qty * price
    pl = value - cost
    plpc = fmt_dec((pl / abs(cost)).quantize(Decimal("0.0001"))) if cost else "0"
    return {
        "asset_id": asset_id(position.symbol),
        "symbol": position.symbol,
        "exchange": "NASDAQ",
        "asset_class": "us_equity",
        "asset_marginable": True,
        "avg_entry_price": fmt_dec(position.avg_entry_price),
        "qty": fmt_dec(qty),
        "qty_available": fmt_dec(qty),
        "side": "long" if qty > 0 else "short",
        "market_value": fmt_dec(value),
        "cost_basis": fmt_dec(cost),
        "unrealized_pl": fmt_dec(pl),
        "unrealized_plpc": plpc,
        "unrealized_intraday_pl": fmt_dec(pl),
        "unrealized_intraday_plpc": plpc,
        "current_price": fmt_dec(price),
        "lastday_price": fmt_dec(price),
        "change_today": "0",
    }


def activity_json(fill: StoredFill, account_id: str) -> dict[str, Any]:
    return {
        "id": fill.id,
        "account_id": account_id,
        "activity_type": "FILL",
        "transaction_time": fill.transaction_time,
        "type": "fill" if fill.kind == "fill" else "partial_fill",
        "price": fmt_dec(fill.price),
        "qty": fmt_dec(fill.qty),
        "side": fill.side,
        "symbol": fill.symbol,
        "leaves_qty": fmt_dec(fill.leaves_qty),
        "order_id": fill.order_id,
        "cum_qty": fmt_dec(fill.cum_qty),
        "order_status": fill.order_status,
    }


def account_json(
    account_id: str, cash: Decimal, long_value: Decimal, short_value: Decimal
) -> dict[str, Any]:
    equity = cash + long_value + short_value
    buying_power = max(equity, Decimal(0))
    return {
        "id": account_id,
        "account_number": "SIM" + account_id.replace("-", "")[:9].upper(),
        "status": "ACTIVE",
        "crypto_status": "ACTIVE",
        "currency": "USD",
        "buying_power": fmt_dec(buying_power),
        "regt_buying_power": fmt_dec(buying_power),
        "non_marginable_buying_power": fmt_dec(buying_power),
        "cash": fmt_dec(cash),
        "accrued_fees": "0",
        "pending_transfer_out": "0",
        "pending_transfer_in": "0",
        "portfolio_value": fmt_dec(equity),
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "created_at": "2024-01-02T14:30:00.000000Z",
        "trade_suspended_by_user": False,
        "multiplier": "1",
        "shorting_enabled": True,
        "equity": fmt_dec(equity),
        "last_equity": fmt_dec(equity),
        "long_market_value": fmt_dec(long_value),
        "short_market_value": fmt_dec(short_value),
        "initial_margin": "0",
        "maintenance_margin": "0",
        "last_maintenance_margin": "0",
        "sma": "0",
        "options_buying_power": "0",
        "options_approved_level": 0,
        "options_trading_level": 0,
    }
