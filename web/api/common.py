"""What every API route shares: JSON that keeps money exact, keyset paging, query parsing."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import HTTPException, Query
from fastapi.responses import JSONResponse

from core.jsonable import jsonable
from core.signals import STRATEGY_PATTERN, TICKER_PATTERN, is_name
from core.states import OrderState

MAX_PAGE = 500
# A strategy name for FastAPI/pydantic `pattern=`, which searches: anchored to match whole.
STRATEGY_NAME_REGEX = rf"^(?:{STRATEGY_PATTERN.pattern})$"
BIGINT_MAX = 2**63 - 1

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size (newest first)")]
Cursor = Annotated[
    str | None, Query(max_length=64, description="`next_cursor` of the previous page")
]
Since = Annotated[datetime | None, Query(description="only rows at or after this time (ISO 8601)")]
RowId = Annotated[int, "a positive 64-bit id"]


def respond(value: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(jsonable(value), status_code=status_code)


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([key]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id the previous page ended at; 422 for anything we did not hand out."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        (key,) = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise HTTPException(422, "cursor: not a cursor this API handed out") from None
    if not isinstance(key, int) or isinstance(key, bool) or not 0 < key <= BIGINT_MAX:
        raise HTTPException(422, "cursor: not a cursor this API handed out")
    return key


def page_body(items: Sequence[Mapping[str, Any]], limit: int, key: str = "id") -> dict[str, Any]:
    """A page of newest-first rows (fetched `limit + 1` to know whether more follow)."""
    more = len(items) > limit
    shown = list(items[:limit])
    next_cursor = encode_cursor(int(shown[-1][key])) if more and shown else None
    return {"items": shown, "next_cursor": next_cursor}


def page(items: Sequence[Mapping[str, Any]], limit: int, key: str = "id") -> JSONResponse:
    return respond(page_body(items, limit, key))


def ticker_param(value: str | None, name: str = "ticker") -> str | None:
    if value is None:
        return None
    ticker = value.strip().upper()
    if not is_name(TICKER_PATTERN, ticker):
        raise HTTPException(422, f"{name}: {value!r} is not a ticker (e.g. AAPL, BRK.B)")
    return ticker


def strategy_param(value: str | None, name: str = "strategy") -> str | None:
    if value is None:
        return None
    if not is_name(STRATEGY_PATTERN, value):
        raise HTTPException(422, f"{name}: {value!r} is not a strategy name (a-z0-9_)")
    return value


def state_param(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return OrderState(value.strip().upper()).value
    except ValueError:
        valid = ", ".join(s.value for s in OrderState)
        raise HTTPException(422, f"state: unknown state {value!r}; valid: {valid}") from None


def id_param(value: int, name: str = "id") -> int:
    if not 0 < value <= BIGINT_MAX:
        raise HTTPException(422, f"{name}: must be between 1 and {BIGINT_MAX}")
    return value
