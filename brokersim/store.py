"""Durable storage: one SQLite file (WAL) holding orders, fills, positions and account cash.

Every write is one transaction, so a SIGKILL leaves either all of a fill (fill row, order totals,
position, cash) or none of it. client_order_id is unique by constraint, as at Alpaca."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from brokersim.ledger import (
    OPEN_STATUSES,
    apply_to_position,
    fmt_dec,
    fmt_ts,
    round_price,
    status_after_fill,
)
from brokersim.records import (
    SCHEMA,
    StoredFill,
    StoredOrder,
    StoredPosition,
    fill_from_row,
    order_from_row,
)

_OPEN_SQL = "(" + ", ".join(f"'{status}'" for status in OPEN_STATUSES) + ")"


class DuplicateOrder(Exception):
    """An order with this client_order_id already exists."""


class Store:
    """All reads and writes, serialised by one re-entrant lock (SQLite allows one writer anyway)."""

    def __init__(self, data_dir: Path, initial_cash: Decimal) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "brokersim.sqlite3"
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process kill; only power loss could drop the tail.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(SCHEMA)
        self._lock = threading.RLock()
        self._last_ts = datetime.min.replace(tzinfo=UTC)
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('account_id', ?), ('cash', ?)",
                (str(uuid.uuid4()), str(initial_cash)),
            )
            last = db.execute("SELECT MAX(submitted_at) FROM orders").fetchone()[0]
        if last:
            self._last_ts = datetime.fromisoformat(last)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one IMMEDIATE transaction; commit on success, roll back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def unique_now(self) -> datetime:
        """Now, but strictly after every submitted_at handed out so far (paging relies on it)."""
        with self._lock:
            now = datetime.now(UTC)
            if now <= self._last_ts:
                now = self._last_ts + timedelta(microseconds=1)
            self._last_ts = now
            return now

    # --- orders -----------------------------------------------------------------------------

    def insert_order(self, order: StoredOrder) -> StoredOrder:
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO orders (id, client_order_id, symbol, side, type, time_in_force,"
                    " qty, limit_price, extended_hours, status, filled_qty, submitted_at,"
                    " updated_at, expires_at, next_fill_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '0', ?, ?, ?, ?)",
                    (
                        order.id,
                        order.client_order_id,
                        order.symbol,
                        order.side,
                        order.type,
                        order.time_in_force,
                        fmt_dec(order.qty),
                        None if order.limit_price is None else fmt_dec(order.limit_price),
                        int(order.extended_hours),
                        order.status,
                        order.submitted_at,
                        order.updated_at,
                        order.expires_at,
                        order.next_fill_at,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            if "client_order_id" in str(exc):
                raise DuplicateOrder(order.client_order_id) from exc
            raise
        return order

    def get_order(self, order_id: str) -> StoredOrder | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        return None if row is None else order_from_row(row)

    def get_by_client_order_id(self, client_order_id: str) -> StoredOrder | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
            ).fetchone()
        return None if row is None else order_from_row(row)

    def list_orders(
        self,
        *,
        status: str = "all",
        after: str | None = None,
        until: str | None = None,
        ascending: bool = False,
        limit: int | None = None,
        symbols: list[str] | None = None,
        side: str | None = None,
        client_order_id: str | None = None,
    ) -> list[StoredOrder]:
        where, args = ["1 = 1"], []  # type: list[str], list[object]
        if status == "open":
            where.append(f"status IN {_OPEN_SQL}")
        elif status == "closed":
            where.append(f"status NOT IN {_OPEN_SQL}")
        if after is not None:
            where.append("submitted_at > ?")
            args.append(after)
        if until is not None:
            where.append("submitted_at < ?")
            args.append(until)
        if symbols:
            where.append(f"symbol IN ({', '.join('?' for _ in symbols)})")
            args.extend(symbols)
        if side is not None:
            where.append("side = ?")
            args.append(side)
        if client_order_id is not None:
            where.append("client_order_id = ?")
            args.append(client_order_id)
        rows = self._select("orders", where, args, "submitted_at", ascending, limit)
        return [order_from_row(row) for row in rows]

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

    def due_orders(self, now: float) -> list[StoredOrder]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM orders WHERE status IN {_OPEN_SQL} AND next_fill_at <= ?"
                " ORDER BY submitted_at",
                (now,),
            ).fetchall()
        return [order_from_row(row) for row in rows]

    def set_status(self, order: StoredOrder, status: str, when: str) -> StoredOrder:
        """Move an order to a terminal or waiting status, stamping the matching *_at column."""
        updated = replace(
            order,
            status=status,
            updated_at=when,
            next_fill_at=None,
            canceled_at=when if status == "canceled" else order.canceled_at,
            expired_at=when if status == "expired" else order.expired_at,
            failed_at=when if status == "rejected" else order.failed_at,
        )
        with self.transaction() as db:
            db.execute(
                "UPDATE orders SET status = ?, updated_at = ?, next_fill_at = NULL,"
                " canceled_at = ?, expired_at = ?, failed_at = ? WHERE id = ?",
                (
                    status,
                    when,
                    updated.canceled_at,
                    updated.expired_at,
                    updated.failed_at,
                    order.id,
                ),
            )
        return updated

    def set_next_fill_at(self, order_id: str, when: float | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE orders SET next_fill_at = ? WHERE id = ?", (when, order_id))

    def expire_day_orders(self, now: str, *, everything: bool = False) -> int:
        """Expire open day orders whose expires_at has passed (or all of them: session end)."""
        sql = (
            f"UPDATE orders SET status = 'expired', expired_at = ?, updated_at = ?,"
            f" next_fill_at = NULL WHERE status IN {_OPEN_SQL} AND time_in_force = 'day'"
        )
        args: list[object] = [now, now]
        if not everything:
            sql += " AND expires_at <= ?"
            args.append(now)
        with self.transaction() as db:
            return db.execute(sql, args).rowcount

    # --- fills and positions ----------------------------------------------------------------

    def record_fill(
        self,
        order: StoredOrder,
        qty: Decimal,
        price: Decimal,
        when: datetime,
        next_fill_at: float | None,
    ) -> StoredOrder:
        """One execution against an open order: fill row, order totals, position and cash."""
        stamp = fmt_ts(when)
        cum = order.filled_qty + qty
        avg_before = order.filled_avg_price or Decimal(0)
        avg_price = round_price((avg_before * order.filled_qty + price * qty) / cum)
        status = status_after_fill(order.qty, cum)
        updated = replace(
            order,
            status=status,
            filled_qty=cum,
            filled_avg_price=avg_price,
            updated_at=stamp,
            filled_at=stamp if status == "filled" else None,
            next_fill_at=next_fill_at if status != "filled" else None,
        )
        with self.transaction() as db:
            current = db.execute(
                "SELECT status, filled_qty FROM orders WHERE id = ?", (order.id,)
            ).fetchone()
            stale = current is None or Decimal(current["filled_qty"]) != order.filled_qty
            if stale or current["status"] not in OPEN_STATUSES:
                # Cancelled, expired or filled by someone else meanwhile: record nothing.
                return self.get_order(order.id) or order
            db.execute(
                "UPDATE orders SET status = ?, filled_qty = ?, filled_avg_price = ?,"
                " updated_at = ?, filled_at = ?, next_fill_at = ? WHERE id = ?",
                (
                    status,
                    fmt_dec(cum),
                    fmt_dec(avg_price),
                    stamp,
                    updated.filled_at,
                    updated.next_fill_at,
                    order.id,
                ),
            )
            kind = "fill" if status == "filled" else "partial_fill"
            self._insert_fill(
                db,
                order.id,
                order.symbol,
                order.side,
                qty,
                price,
                kind,
                cum,
                order.qty - cum,
                status,
                when,
            )
        return updated

    def adjust_position(self, symbol: str, delta: Decimal, price: Decimal, when: datetime) -> str:
        """A fill with no order behind it: the account changed behind Arbiter's back."""
        side = "buy" if delta > 0 else "sell"
        with self.transaction() as db:
            return self._insert_fill(
                db,
                None,
                symbol,
                side,
                abs(delta),
                price,
                "adjustment",
                abs(delta),
                Decimal(0),
                "filled",
                when,
            )

    def _insert_fill(
        self,
        db: sqlite3.Connection,
        order_id: str | None,
        symbol: str,
        side: str,
        qty: Decimal,
        price: Decimal,
        kind: str,
        cum: Decimal,
        leaves: Decimal,
        order_status: str,
        when: datetime,
    ) -> str:
        # Alpaca's activity id form: a 17-digit time, '::', a uuid.
        fill_id = f"{when:%Y%m%d%H%M%S}{when.microsecond // 1000:03d}::{uuid.uuid4()}"
        stamp = fmt_ts(when)
        db.execute(
            "INSERT INTO fills (id, order_id, symbol, side, qty, price, kind, cum_qty,"
            " leaves_qty, order_status, transaction_time) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                fill_id,
                order_id,
                symbol,
                side,
                fmt_dec(qty),
                fmt_dec(price),
                kind,
                fmt_dec(cum),
                fmt_dec(leaves),
                order_status,
                stamp,
            ),
        )
        signed = qty if side == "buy" else -qty
        row = db.execute(
            "SELECT qty, avg_entry_price FROM positions WHERE symbol = ?", (symbol,)
        ).fetchone()
        old_qty = Decimal(row["qty"]) if row else Decimal(0)
        old_avg = Decimal(row["avg_entry_price"]) if row else Decimal(0)
        new_qty, new_avg = apply_to_position(old_qty, old_avg, signed, price)
        if new_qty == 0:
            db.execute("DELETE FROM positions WHERE symbol = ?", (symbol,))
        else:
            db.execute(
                "INSERT INTO positions (symbol, qty, avg_entry_price) VALUES (?, ?, ?)"
                " ON CONFLICT (symbol) DO UPDATE SET qty = excluded.qty,"
                " avg_entry_price = excluded.avg_entry_price",
                (symbol, fmt_dec(new_qty), fmt_dec(round_price(new_avg))),
            )
        cash = Decimal(db.execute("SELECT value FROM meta WHERE key = 'cash'").fetchone()[0])
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'cash'", (fmt_dec(cash - signed * price),)
        )
        return fill_id

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
