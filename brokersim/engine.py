"""The fill engine: accepts orders, decides rejects (seeded), fills in slices at the reference
price (limits only when the price crosses), expires day orders. With zero fill latency it fills
inside the submit call; otherwise a background thread works through due orders every tick."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from brokersim.config import SimConfig
from brokersim.faults import Faults
from brokersim.ledger import fmt_ts, slice_quantity
from brokersim.prices import PriceBook, chance
from brokersim.records import StoredOrder
from brokersim.store import Store
from brokersim.validate import ApiError, OrderSpec

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, store: Store, book: PriceBook, config: SimConfig, faults: Faults) -> None:
        self.store = store
        self.book = book
        self.config = config
        self.faults = faults
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- requests ---------------------------------------------------------------------------

    def submit(self, spec: OrderSpec) -> StoredOrder:
        """Store the order (DuplicateOrder if its client_order_id exists), then act on it."""
        now = self.store.unique_now()
        stamp = fmt_ts(now)
        client_order_id = spec.client_order_id or str(uuid.uuid4())
        rejected = chance(self.config.seed, "reject", client_order_id) < self.config.reject_rate
        latency_s = self.config.fill_latency_ms / 1000
        order = self.store.insert_order(
            StoredOrder(
                id=str(uuid.uuid4()),
                client_order_id=client_order_id,
                symbol=spec.symbol,
                side=spec.side,
                type=spec.type,
                time_in_force=spec.time_in_force,
                qty=spec.qty,
                limit_price=spec.limit_price,
                extended_hours=spec.extended_hours,
                status="new",
                filled_qty=Decimal(0),
                filled_avg_price=None,
                submitted_at=stamp,
                updated_at=stamp,
                expires_at=(
                    fmt_ts(now + timedelta(seconds=self.config.day_length_s))
                    if spec.time_in_force == "day"
                    else None
                ),
                next_fill_at=now.timestamp() + latency_s,
            )
        )
        if rejected:
            return self.store.set_status(order, "rejected", stamp)
        if latency_s == 0 and not self.faults.settings.fills_paused:
            # Under the lock, so the engine thread cannot slice the same order meanwhile.
            with self.store.locked():
                for _ in range(self.config.partial_slices):
                    current = self.store.get_order(order.id)
                    if current is None or not current.is_open:
                        break
                    if self._fill_slice(current) == current:
                        break  # a limit that has not crossed
        return self.store.get_order(order.id) or order

    def cancel(self, order_id: str) -> StoredOrder:
        with self.store.locked():
            order = self.store.get_order(order_id)
            if order is None:
                raise ApiError(404, 40410000, "order not found")
            if not order.is_open:
                raise ApiError(422, 42210000, f'order is already in "{order.status}" state')
            return self.store.set_status(order, "canceled", fmt_ts(datetime.now(UTC)))

    def fill_now(self, order_id: str, price: Decimal | None = None) -> StoredOrder:
        """Admin: fill whatever is left of an open order at once, limit or not."""
        with self.store.locked():
            order = self.store.get_order(order_id)
            if order is None:
                raise ApiError(404, 40410000, "order not found")
            if not order.is_open:
                raise ApiError(422, 42210000, f'order is already in "{order.status}" state')
            fill_price = price if price is not None else self.book.price(order.symbol)
            now = datetime.now(UTC)
            return self.store.record_fill(
                order, order.qty - order.filled_qty, fill_price, now, None
            )

    # --- the engine's own work --------------------------------------------------------------

    def _crossed(self, order: StoredOrder, price: Decimal) -> bool:
        if order.type != "limit" or order.limit_price is None:
            return True
        return price <= order.limit_price if order.side == "buy" else price >= order.limit_price

    def _fill_slice(self, order: StoredOrder) -> StoredOrder:
        """One slice if the price allows; a waiting limit order stays due for the next tick."""
        price = self.book.price(order.symbol)
        if not self._crossed(order, price):
            return order
        qty = slice_quantity(order.qty, order.filled_qty, self.config.partial_slices)
        now = datetime.now(UTC)
        next_at = now.timestamp() + self.config.fill_latency_ms / 1000
        return self.store.record_fill(order, qty, price, now, next_at)

    def step(self) -> None:
        """One tick: move prices, expire day orders, fill whatever is due."""
        self.book.advance()
        now = datetime.now(UTC)
        self.store.expire_day_orders(fmt_ts(now))
        if self.faults.settings.fills_paused:
            return
        for order in self.store.due_orders(now.timestamp()):
            with self.store.locked():
                current = self.store.get_order(order.id)
                if current is not None and current.is_open:
                    self._fill_slice(current)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="brokersim-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        period = self.config.tick_ms / 1000
        while not self._stop.wait(period):
            try:
                self.step()
            except Exception:  # keep the engine alive; the next tick retries
                log.exception("brokersim engine tick failed")
