"""Plain JSON for people and scripts: the one conversion the CLI and the web API share."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any


def plain_decimal(value: Decimal) -> str:
    """`50`, `236.25`, `0`: no storage-scale trailing zeros, never an exponent."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def jsonable(value: Any) -> Any:
    """Decimals as strings (money stays exact), datetimes ISO 8601, containers recursively."""
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
