"""Durable storage: one SQLite file (WAL) holding orders, fills, positions and account cash.

Every write is one transaction, so a SIGKILL leaves either all of a change (a fill with its
position and cash, a bracket's three orders, a replace's two) or none of it. client_order_id is
unique by constraint, as at Alpaca, for legs and replacements too. Each transaction records the
trade_updates events it causes; they go to `on_updates` after COMMIT, in commit order."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from brokersim import contingent
from brokersim.fillbook import Execution, LedgerReads, book, execution_id
from brokersim.ledger import OPEN_STATUSES, fmt_ts, round_price
from brokersim.records import (
    ADDED_COLUMNS,
    INDEXES,
    ORDER_COLUMNS,
    SCHEMA,
    StoredOrder,
    Update,
    order_from_row,
    order_to_row,
)

_OPEN_SQL = "(" + ", ".join(f"'{status}'" for status in OPEN_STATUSES) + ")"
_STAMPS = {"canceled": "canceled_at", "expired": "expired_at", "rejected": "failed_at"}


class DuplicateOrder(Exception):
    """An order with this client_order_id already exists."""


class Store(LedgerReads):
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
        have = {row["name"] for row in self._conn.execute("PRAGMA table_info(orders)")}
        for column, ddl in ADDED_COLUMNS.items():
            if column not in have:
                self._conn.execute(f"ALTER TABLE orders ADD COLUMN {column} {ddl}")
        self._conn.executescript(INDEXES)
        self._lock = threading.RLock()
        self._updates: list[Update] = []
        self.on_updates: Callable[[list[Update]], None] | None = None
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
        """Hold the lock and one IMMEDIATE transaction; commit on success, roll back on error.
        Events recorded meanwhile are handed to on_updates after the commit (lock still held,
        so subscribers see them in commit order)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._updates = []
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                self._updates = []
                raise
            self._conn.execute("COMMIT")
            updates, self._updates = self._updates, []
            if updates and self.on_updates is not None:
                self.on_updates(updates)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def emit(self, update: Update) -> None:
        """Record an event of the transaction under way."""
        self._updates.append(update)

    def unique_now(self) -> datetime:
        """Now, but strictly after every submitted_at handed out so far (paging relies on it)."""
        with self._lock:
            now = datetime.now(UTC)
            if now <= self._last_ts:
                now = self._last_ts + timedelta(microseconds=1)
            self._last_ts = now
            return now

    # --- order writes -----------------------------------------------------------------------

    def insert_order(self, order: StoredOrder) -> StoredOrder:
        return self.insert_orders([order])[0]

    def insert_orders(self, orders: list[StoredOrder]) -> list[StoredOrder]:
        """Store an order with its legs in one transaction; a `new` event for each working one."""
        try:
            with self.transaction() as db:
                for order in orders:
                    self.insert_row(db, order)
        except sqlite3.IntegrityError as exc:
            if "client_order_id" in str(exc):
                raise DuplicateOrder(orders[0].client_order_id) from exc
            raise
        return orders

    def insert_row(self, db: sqlite3.Connection, order: StoredOrder) -> None:
        marks = ", ".join("?" for _ in ORDER_COLUMNS)
        db.execute(
            f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}) VALUES ({marks})",
            order_to_row(order),
        )
        if order.status in ("new", "rejected"):
            self.emit(Update(order.status, order.id, order.updated_at))

    def write(self, db: sqlite3.Connection, order: StoredOrder) -> StoredOrder:
        """Overwrite every column of an existing order (inside the caller's transaction)."""
        sets = ", ".join(f"{column} = ?" for column in ORDER_COLUMNS[1:])
        db.execute(f"UPDATE orders SET {sets} WHERE id = ?", (*order_to_row(order)[1:], order.id))
        return order

    def save(self, order: StoredOrder) -> StoredOrder:
        with self.transaction() as db:
            return self.write(db, order)

    def finish(
        self, db: sqlite3.Connection, order: StoredOrder, status: str, when: str
    ) -> StoredOrder:
        """End an order (canceled, expired, rejected), with its event and stamp."""
        stamp = _STAMPS.get(status)
        changes: dict[str, Any] = {"status": status, "updated_at": when, "next_fill_at": None}
        if stamp:
            changes[stamp] = when
        ended = self.write(db, replace(order, **changes))
        self.emit(Update(status, order.id, when))
        return ended

    def set_status(self, order: StoredOrder, status: str, when: str) -> StoredOrder:
        """End an order, and whatever depends on it (held legs, the other side of an OCO)."""
        with self.transaction() as db:
            ended = self.finish(db, order, status, when)
            contingent.after_end(self, db, ended, when)
            return ended

    def set_next_fill_at(self, order_id: str, when: float | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE orders SET next_fill_at = ? WHERE id = ?", (when, order_id))

    def expire_day_orders(self, now: str, *, everything: bool = False) -> int:
        """Expire open day orders whose expires_at has passed (or all of them: session end)."""
        sql = f"SELECT * FROM orders WHERE status IN {_OPEN_SQL} AND time_in_force = 'day'"
        args: list[object] = []
        if not everything:
            sql += " AND expires_at <= ?"
            args.append(now)
        with self._lock:
            due = [order_from_row(row) for row in self._conn.execute(sql, args).fetchall()]
            if not due:
                return 0  # the common tick: no write transaction at all
        with self.transaction() as db:
            for order in due:
                current = self.get_order(order.id)
                if current is not None and current.is_open:
                    contingent.after_end(self, db, self.finish(db, current, "expired", now), now)
        return len(due)

    def replace_order(self, old: StoredOrder, new: StoredOrder) -> StoredOrder:
        """PATCH: the old order becomes `replaced` (replaced_by), the new one takes its place,
        its legs and its place in a bracket or OCO group."""
        stamp = new.submitted_at
        try:
            with self.transaction() as db:
                self.write(
                    db,
                    replace(
                        old,
                        status="replaced",
                        replaced_by=new.id,
                        replaced_at=stamp,
                        updated_at=stamp,
                        next_fill_at=None,
                    ),
                )
                self.emit(Update("replaced", old.id, stamp))
                self.insert_row(db, new)
                db.execute("UPDATE orders SET parent_id = ? WHERE parent_id = ?", (new.id, old.id))
        except sqlite3.IntegrityError as exc:
            if "client_order_id" in str(exc):
                raise DuplicateOrder(new.client_order_id) from exc
            raise
        return new

    # --- order reads ------------------------------------------------------------------------

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

    def legs_of(self, parent_id: str) -> list[StoredOrder]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM orders WHERE parent_id = ? ORDER BY submitted_at", (parent_id,)
            ).fetchall()
        return [order_from_row(row) for row in rows]

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
        top_level_only: bool = False,
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
        if top_level_only:
            where.append("parent_id IS NULL")
        rows = self._select("orders", where, args, "submitted_at", ascending, limit)
        return [order_from_row(row) for row in rows]

    def due_orders(self, now: float) -> list[StoredOrder]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM orders WHERE status IN {_OPEN_SQL} AND next_fill_at <= ?"
                " ORDER BY submitted_at",
                (now,),
            ).fetchall()
        return [order_from_row(row) for row in rows]

    # --- fills and positions ----------------------------------------------------------------

    def record_fill(
        self,
        order: StoredOrder,
        qty: Decimal,
        price: Decimal,
        when: datetime,
        next_fill_at: float | None,
    ) -> StoredOrder:
        """One execution against an open order: fill row, order totals, position and cash; then
        what the fill sets off (a filled entry's legs go live, an OCO partner is cancelled)."""
        stamp = fmt_ts(when)
        cum = order.filled_qty + qty
        avg_before = order.filled_avg_price or Decimal(0)
        avg_price = round_price((avg_before * order.filled_qty + price * qty) / cum)
        done = cum >= order.qty - order.prior_filled_qty
        status = "filled" if done else "partially_filled"
        updated = replace(
            order,
            status=status,
            filled_qty=cum,
            filled_avg_price=avg_price,
            updated_at=stamp,
            filled_at=stamp if done else None,
            next_fill_at=None if done else next_fill_at,
        )
        with self.transaction() as db:
            current = self.get_order(order.id)
            if current is None or current.filled_qty != order.filled_qty or not current.is_open:
                # Cancelled, expired or filled by someone else meanwhile: record nothing.
                return current or order
            self.write(db, updated)
            kind = "fill" if done else "partial_fill"
            fill_id, position_qty = book(
                db,
                Execution(
                    order.id,
                    order.symbol,
                    order.side,
                    qty,
                    price,
                    kind,
                    cum,
                    updated.leaves_qty,
                    status,
                    when,
                ),
            )
            self.emit(
                Update(kind, order.id, stamp, price, qty, position_qty, execution_id(fill_id))
            )
            contingent.after_fill(self, db, updated, when)
        return updated

    def adjust_position(self, symbol: str, delta: Decimal, price: Decimal, when: datetime) -> str:
        """A fill with no order behind it: the account changed behind Arbiter's back."""
        side = "buy" if delta > 0 else "sell"
        with self.transaction() as db:
            fill_id, _ = book(
                db,
                Execution(
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
                ),
            )
            return fill_id
