"""The simulator's tables, its rows as frozen dataclasses, and how SQLite rows become them."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from decimal import Decimal

from brokersim.ledger import OPEN_STATUSES, fmt_dec

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    client_order_id TEXT NOT NULL UNIQUE,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    type TEXT NOT NULL,
    time_in_force TEXT NOT NULL,
    qty TEXT NOT NULL,
    limit_price TEXT,
    extended_hours INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    filled_qty TEXT NOT NULL DEFAULT '0',
    filled_avg_price TEXT,
    submitted_at TEXT NOT NULL UNIQUE,
    updated_at TEXT NOT NULL,
    filled_at TEXT,
    canceled_at TEXT,
    expired_at TEXT,
    failed_at TEXT,
    expires_at TEXT,
    next_fill_at REAL
);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status, next_fill_at);
CREATE TABLE IF NOT EXISTS fills (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    order_id TEXT REFERENCES orders (id),
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty TEXT NOT NULL,
    price TEXT NOT NULL,
    kind TEXT NOT NULL,
    cum_qty TEXT NOT NULL,
    leaves_qty TEXT NOT NULL,
    order_status TEXT NOT NULL,
    transaction_time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fills_order ON fills (order_id);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY,
    qty TEXT NOT NULL,
    avg_entry_price TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Columns added after the first release: a data dir written by an older simulator gains them
# on start (ALTER TABLE ... ADD COLUMN), so its orders keep working.
ADDED_COLUMNS = {
    "order_class": "TEXT NOT NULL DEFAULT 'simple'",
    "stop_price": "TEXT",
    "trail_price": "TEXT",
    "trail_percent": "TEXT",
    "hwm": "TEXT",
    "triggered": "INTEGER NOT NULL DEFAULT 0",
    "parent_id": "TEXT",
    "leg_role": "TEXT",
    "replaces": "TEXT",
    "replaced_by": "TEXT",
    "replaced_at": "TEXT",
    "prior_filled_qty": "TEXT NOT NULL DEFAULT '0'",
}
INDEXES = "CREATE INDEX IF NOT EXISTS orders_parent ON orders (parent_id);"


@dataclass(frozen=True)
class StoredOrder:
    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    limit_price: Decimal | None
    extended_hours: bool
    status: str
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    submitted_at: str
    updated_at: str
    filled_at: str | None = None
    canceled_at: str | None = None
    expired_at: str | None = None
    failed_at: str | None = None
    expires_at: str | None = None
    next_fill_at: float | None = None
    order_class: str = "simple"
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    triggered: bool = False  # a stop (or trailing stop) has been elected
    parent_id: str | None = None
    leg_role: str | None = None  # "take_profit" or "stop_loss"
    replaces: str | None = None
    replaced_by: str | None = None
    replaced_at: str | None = None
    # A replacement of a partly filled order: the chain's shares already filled before it.
    prior_filled_qty: Decimal = Decimal(0)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def leaves_qty(self) -> Decimal:
        """What this order still has to execute (a replacement excludes the chain's fills)."""
        return self.qty - self.prior_filled_qty - self.filled_qty


_DECIMALS = {
    "qty",
    "limit_price",
    "filled_qty",
    "filled_avg_price",
    "stop_price",
    "trail_price",
    "trail_percent",
    "hwm",
    "prior_filled_qty",
}
_BOOLS = {"extended_hours", "triggered"}
ORDER_COLUMNS = tuple(f.name for f in fields(StoredOrder))


def order_to_row(order: StoredOrder) -> tuple[object, ...]:
    """Column values in ORDER_COLUMNS order: decimals as strings, booleans as 0/1."""
    values: list[object] = []
    for name in ORDER_COLUMNS:
        value = getattr(order, name)
        if name in _DECIMALS and value is not None:
            value = fmt_dec(value)
        elif name in _BOOLS:
            value = int(value)
        values.append(value)
    return tuple(values)


def order_from_row(row: sqlite3.Row) -> StoredOrder:
    values: dict[str, object] = {}
    for name in ORDER_COLUMNS:
        value = row[name]
        if name in _DECIMALS and value is not None:
            value = Decimal(value)
        elif name in _BOOLS:
            value = bool(value)
        values[name] = value
    return StoredOrder(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StoredFill:
    seq: int
    id: str
    order_id: str | None
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    kind: str
    cum_qty: Decimal
    leaves_qty: Decimal
    order_status: str
    transaction_time: str


@dataclass(frozen=True)
class StoredPosition:
    symbol: str
    qty: Decimal
    avg_entry_price: Decimal


@dataclass(frozen=True)
class Update:
    """One trade_updates event, recorded inside the transaction that caused it."""

    event: str
    order_id: str
    timestamp: str
    price: Decimal | None = None
    qty: Decimal | None = None
    position_qty: Decimal | None = None
    execution_id: str | None = None


def fill_from_row(row: sqlite3.Row) -> StoredFill:
    return StoredFill(
        seq=row["seq"],
        id=row["id"],
        order_id=row["order_id"],
        symbol=row["symbol"],
        side=row["side"],
        qty=Decimal(row["qty"]),
        price=Decimal(row["price"]),
        kind=row["kind"],
        cum_qty=Decimal(row["cum_qty"]),
        leaves_qty=Decimal(row["leaves_qty"]),
        order_status=row["order_status"],
        transaction_time=row["transaction_time"],
    )
