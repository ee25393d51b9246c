"""The simulator's tables, its rows as frozen dataclasses, and how SQLite rows become them."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from decimal import Decimal

from brokersim.ledger import OPEN_STATUSES

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

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


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


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def order_from_row(row: sqlite3.Row) -> StoredOrder:
    return StoredOrder(
        id=row["id"],
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=row["side"],
        type=row["type"],
        time_in_force=row["time_in_force"],
        qty=Decimal(row["qty"]),
        limit_price=_dec(row["limit_price"]),
        extended_hours=bool(row["extended_hours"]),
        status=row["status"],
        filled_qty=Decimal(row["filled_qty"]),
        filled_avg_price=_dec(row["filled_avg_price"]),
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        filled_at=row["filled_at"],
        canceled_at=row["canceled_at"],
        expired_at=row["expired_at"],
        failed_at=row["failed_at"],
        expires_at=row["expires_at"],
        next_fill_at=row["next_fill_at"],
    )


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
