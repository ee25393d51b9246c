"""Turn untrusted request bodies and query strings into typed values, or an Alpaca-style 4xx."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9.]{0,11}(/[A-Z]{2,6})?$")
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


def decimal_field(body: dict[str, object], name: str, *, required: bool) -> Decimal | None:
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


def choice_field(
    body: dict[str, object], name: str, allowed: tuple[str, ...], default: str | None
) -> str:
    raw = body.get(name, default)
    if raw is None:
        raise invalid(f"{name} is required")
    if not isinstance(raw, str) or raw.lower() not in allowed:
        raise invalid(f"invalid {name}: {raw!r} (supported: {', '.join(allowed)})")
    return raw.lower()


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
