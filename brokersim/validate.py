"""Turn untrusted request bodies and query strings into typed values, or an Alpaca-style 4xx."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,11}(/[A-Z]{2,6})?$")
_MAX_DECIMALS = 9
_MAX_QTY = Decimal("100000000")


class ApiError(Exception):
    """An error answer in Alpaca's shape: HTTP status plus {"code", "message"}."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(422, 40010001, message)


@dataclass(frozen=True)
class OrderSpec:
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    limit_price: Decimal | None
    client_order_id: str | None
    extended_hours: bool


def _decimal(body: dict[str, object], name: str, *, required: bool) -> Decimal | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise invalid(f"{name} is required")
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise invalid(f"{name} must be a number")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise invalid(f"invalid {name}") from None
    if not value.is_finite() or value <= 0:
        raise invalid(f"{name} must be > 0")
    if value > _MAX_QTY:
        raise invalid(f"{name} is too large")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > _MAX_DECIMALS:
        raise invalid(f"{name} can have at most {_MAX_DECIMALS} decimal places")
    return value


def _choice(
    body: dict[str, object], name: str, allowed: tuple[str, ...], default: str | None
) -> str:
    raw = body.get(name, default)
    if raw is None:
        raise invalid(f"{name} is required")
    if not isinstance(raw, str) or raw.lower() not in allowed:
        raise invalid(f"invalid {name}: {raw!r} (supported: {', '.join(allowed)})")
    return raw.lower()


def parse_order(body: object) -> OrderSpec:
    """Validate a POST /v2/orders body; the simulator supports market and limit, day and gtc."""
    if not isinstance(body, dict):
        raise ApiError(400, 40010000, "request body format is invalid")
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise invalid("symbol is required")
    symbol = symbol.strip().upper()
    if not _SYMBOL.match(symbol):
        raise invalid(f"invalid symbol: {symbol!r}")
    if body.get("notional") is not None:
        raise invalid("notional orders are not supported by the simulator")
    qty = _decimal(body, "qty", required=True)
    assert qty is not None
    side = _choice(body, "side", ("buy", "sell"), None)
    order_type = _choice(body, "type", ("market", "limit"), None)
    tif = _choice(body, "time_in_force", ("day", "gtc"), None)
    limit_price = _decimal(body, "limit_price", required=order_type == "limit")
    if order_type == "market" and limit_price is not None:
        raise invalid("limit_price must not be given for market orders")
    if body.get("order_class") not in (None, "", "simple"):
        raise invalid("only simple orders are supported by the simulator")
    client_order_id = body.get("client_order_id")
    if client_order_id is not None and (
        not isinstance(client_order_id, str) or not 0 < len(client_order_id) <= 128
    ):
        raise invalid("client_order_id must be a string of 1 to 128 characters")
    extended = body.get("extended_hours", False)
    if not isinstance(extended, bool):
        raise invalid("extended_hours must be a boolean")
    return OrderSpec(symbol, side, order_type, tif, qty, limit_price, client_order_id, extended)


def parse_time(value: str | None, name: str) -> str | None:
    """An RFC 3339 timestamp or date from a query string, normalised to our stored form."""
    if value is None or value == "":
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace(" ", "+").replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"invalid {name}: {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise invalid(f"invalid {name}: {value!r}") from None
    if number < low:
        raise invalid(f"{name} must be >= {low}")
    return min(number, high)


def parse_choice(value: str | None, name: str, allowed: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    if value.lower() not in allowed:
        raise invalid(f"invalid {name}: {value!r}")
    return value.lower()
