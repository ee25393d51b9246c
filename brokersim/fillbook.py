"""Executions and what they do to the account, inside a caller's transaction: the fill row,
the position (average cost) and cash, plus the read side of fills and positions."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from brokersim.ledger import apply_to_position, fmt_dec, fmt_ts, round_price
from brokersim.records import StoredFill, StoredPosition, fill_from_row


@dataclass(frozen=True)
class Execution:
    """One fill to book: qty at price for an order (None: an adjustment behind our back)."""

    order_id: str | None
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    kind: str  # fill, partial_fill or adjustment
    cum_qty: Decimal
    leaves_qty: Decimal
    order_status: str
    when: datetime


def execution_id(fill_id: str) -> str:
    """The UUID half of an activity id: what trade_updates carries as execution_id."""
    return fill_id.split("::", 1)[1]


def book(db: sqlite3.Connection, ex: Execution) -> tuple[str, Decimal]:
    """Insert the fill row and move position and cash; return (fill id, position qty after)."""
    # Alpaca's activity id form: a 17-digit time, '::', a uuid (the execution id).
    fill_id = f"{ex.when:%Y%m%d%H%M%S}{ex.when.microsecond // 1000:03d}::{uuid.uuid4()}"
    db.execute(
        "INSERT INTO fills (id, order_id, symbol, side, qty, price, kind, cum_qty,"
        " leaves_qty, order_status, transaction_time) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            fill_id,
            ex.order_id,
            ex.symbol,
            ex.side,
            fmt_dec(ex.qty),
            fmt_dec(ex.price),
            ex.kind,
            fmt_dec(ex.cum_qty),
            fmt_dec(ex.leaves_qty),
            ex.order_status,
            fmt_ts(ex.when),
        ),
    )
    signed = ex.qty if ex.side == "buy" else -ex.qty
    row = db.execute(
        "SELECT qty, avg_entry_price FROM positions WHERE symbol = ?", (ex.symbol,)
    ).fetchone()
    old_qty = Decimal(row["qty"]) if row else Decimal(0)
    old_avg = Decimal(row["avg_entry_price"]) if row else Decimal(0)
    new_qty, new_avg = apply_to_position(old_qty, old_avg, signed, ex.price)
    if new_qty == 0:
        db.execute("DELETE FROM positions WHERE symbol = ?", (ex.symbol,))
    else:
        db.execute(
            "INSERT INTO positions (symbol, qty, avg_entry_price) VALUES (?, ?, ?)"
            " ON CONFLICT (symbol) DO UPDATE SET qty = excluded.qty,"
            " avg_entry_price = excluded.avg_entry_price",
            (ex.symbol, fmt_dec(new_qty), fmt_dec(round_price(new_avg))),
        )
    cash = Decimal(db.execute("SELECT value FROM meta WHERE key = 'cash'").fetchone()[0])
    db.execute("UPDATE meta SET value = ? WHERE key = 'cash'", (fmt_dec(cash - signed * ex.price),))
    return fill_id, new_qty


def _fill_filters(
    *,
    order_id: str | None,
    after_seq: int | None,
    ascending: bool,
    include_adjustments: bool,
    after: str | None,
    until: str | None,
) -> tuple[list[str], list[object]]:
    """WHERE conditions and arguments for a fills query."""
    where, args = ["1 = 1"], []  # type: list[str], list[object]
    if order_id is not None:
        where.append("order_id = ?")
        args.append(order_id)
    if after_seq is not None:
        where.append("seq > ?" if ascending else "seq < ?")
        args.append(after_seq)
    if not include_adjustments:
        where.append("kind != 'adjustment'")
    if after is not None:
        where.append("transaction_time > ?")
        args.append(after)
    if until is not None:
        where.append("transaction_time < ?")
        args.append(until)
    return where, args


class LedgerReads:
    """The read side of fills, positions and account values (mixed into the Store)."""

    _lock: threading.RLock
    _conn: sqlite3.Connection

    def _select(
        self,
        table: str,
        where: list[str],
        args: list[Any],
        order_by: str,
        ascending: bool,
        limit: int | None,
    ) -> list[sqlite3.Row]:
        """The rows of `table` matching every condition, in order, at most `limit`."""
        sql = f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY {order_by} "
        sql += "ASC" if ascending else "DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def fills(
        self,
        *,
        order_id: str | None = None,
        after_seq: int | None = None,
        ascending: bool = True,
        limit: int | None = None,
        include_adjustments: bool = True,
        after: str | None = None,
        until: str | None = None,
    ) -> list[StoredFill]:
        where, args = _fill_filters(
            order_id=order_id,
            after_seq=after_seq,
            ascending=ascending,
            include_adjustments=include_adjustments,
            after=after,
            until=until,
        )
        rows = self._select("fills", where, args, "seq", ascending, limit)
        return [fill_from_row(row) for row in rows]

    def fill_seq(self, fill_id: str) -> int | None:
        with self._lock:
            row = self._conn.execute("SELECT seq FROM fills WHERE id = ?", (fill_id,)).fetchone()
        return None if row is None else int(row["seq"])

    def positions(self) -> list[StoredPosition]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM positions ORDER BY symbol").fetchall()
        return [
            StoredPosition(row["symbol"], Decimal(row["qty"]), Decimal(row["avg_entry_price"]))
            for row in rows
        ]

    def meta(self, key: str) -> str:
        with self._lock:
            return str(
                self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
            )
