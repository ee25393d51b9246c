"""The fill engine: accepts orders (with their legs), decides rejects (seeded), elects stops and
moves trailing stops on the seeded price path, fills in slices at the reference price (limits
only when the price crosses), applies ioc / fok, replaces and cancels, expires day orders.

With zero fill latency it works an order inside the submit call; otherwise a background thread
works through due orders every tick. opg and cls orders are worked like day orders at the
current price: the simulator's market is always in session (no auctions)."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from brokersim.builder import build_orders, build_replacement
from brokersim.config import SimConfig
from brokersim.faults import Faults
from brokersim.ledger import fmt_ts, slice_quantity
from brokersim.prices import PriceBook, chance
from brokersim.records import StoredOrder
from brokersim.specs import OrderSpec, ReplaceSpec
from brokersim.store import Store
from brokersim.triggers import STOP_TYPES, limit_crossed, stop_elected, trail
from brokersim.validate import ApiError

log = logging.getLogger(__name__)


def _not_open(order: StoredOrder) -> ApiError:
    return ApiError(422, 42210000, f'order is already in "{order.status}" state')


class Engine:
    def __init__(self, store: Store, book: PriceBook, config: SimConfig, faults: Faults) -> None:
        self.store = store
        self.book = book
        self.config = config
        self.faults = faults
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _works_inline(self) -> bool:
        return self.config.fill_latency_ms == 0 and not self.faults.settings.fills_paused

    # --- requests ---------------------------------------------------------------------------

    def submit(self, spec: OrderSpec) -> StoredOrder:
        """Store the order and its legs (DuplicateOrder if a client_order_id exists), then act."""
        orders = build_orders(
            spec,
            config=self.config,
            stamp=self.store.unique_now,
            market_price=self.book.price(spec.symbol),
        )
        main = orders[0]
        if chance(self.config.seed, "reject", main.client_order_id) < self.config.reject_rate:
            orders = [
                replace(o, status="rejected", failed_at=o.submitted_at, next_fill_at=None)
                for o in orders
            ]
        self.store.insert_orders(orders)
        if orders[0].status == "new" and self._works_inline:
            # Under the lock, so the engine thread cannot slice the same order meanwhile.
            with self.store.locked():
                self._work(main.id, self.config.partial_slices)
        return self.store.get_order(main.id) or orders[0]

    def cancel(self, order_id: str) -> StoredOrder:
        with self.store.locked():
            order = self.store.get_order(order_id)
            if order is None:
                raise ApiError(404, 40410000, "order not found")
            if not order.is_open:
                raise _not_open(order)
            return self.store.set_status(order, "canceled", fmt_ts(datetime.now(UTC)))

    def replace(self, order_id: str, spec: ReplaceSpec) -> StoredOrder:
        """PATCH /v2/orders/{id}: a new order takes the old one's place (DuplicateOrder if the
        given client_order_id exists)."""
        with self.store.locked():
            old = self.store.get_order(order_id)
            if old is None:
                raise ApiError(404, 40410000, "order not found")
            new = build_replacement(
                old,
                spec,
                config=self.config,
                now=self.store.unique_now(),
                market_price=self.book.price(old.symbol),
            )
            self.store.replace_order(old, new)
            if new.status == "new" and self._works_inline:
                self._work(new.id, self.config.partial_slices)
            return self.store.get_order(new.id) or new

    def fill_now(self, order_id: str, price: Decimal | None = None) -> StoredOrder:
        """Admin: fill whatever is left of a working order at once, whatever its price rules."""
        with self.store.locked():
            order = self.store.get_order(order_id)
            if order is None:
                raise ApiError(404, 40410000, "order not found")
            if not order.is_open or order.status == "held":
                raise _not_open(order)
            fill_price = price if price is not None else self.book.price(order.symbol)
            return self.store.record_fill(
                order, order.leaves_qty, fill_price, datetime.now(UTC), None
            )

    # --- the engine's own work --------------------------------------------------------------

    def _work(self, order_id: str, rounds: int) -> None:
        """Evaluate an order up to `rounds` times, while each evaluation changes something."""
        for _ in range(rounds + 2):  # + electing a stop, + moving a trailing stop
            current = self.store.get_order(order_id)
            if current is None or not current.is_open or current.status == "held":
                return
            if self._evaluate(current) == current:
                return

    def _evaluate(self, order: StoredOrder) -> StoredOrder:
        """One step on the current price: move a trailing stop, elect a stop, fill a slice (all
        of it for ioc / fok), or cancel an ioc / fok that cannot execute now."""
        price = self.book.price(order.symbol)
        if order.type == "trailing_stop" and not order.triggered:
            hwm, stop = trail(order, price)
            if (hwm, stop) != (order.hwm, order.stop_price):
                order = self.store.save(replace(order, hwm=hwm, stop_price=stop))
        if not stop_elected(order, price):
            return order
        if order.type in STOP_TYPES and not order.triggered:
            order = self.store.save(replace(order, triggered=True))
        if not limit_crossed(order, price):
            if order.time_in_force in ("ioc", "fok"):
                return self.store.set_status(order, "canceled", fmt_ts(datetime.now(UTC)))
            return order
        immediate = order.time_in_force in ("ioc", "fok")
        qty = (
            order.leaves_qty
            if immediate
            else slice_quantity(
                order.qty - order.prior_filled_qty, order.filled_qty, self.config.partial_slices
            )
        )
        now = datetime.now(UTC)
        return self.store.record_fill(
            order, qty, price, now, now.timestamp() + self.config.fill_latency_ms / 1000
        )

    def step(self) -> None:
        """One tick: move prices, expire day orders, work whatever is due."""
        self.book.advance()
        now = datetime.now(UTC)
        self.store.expire_day_orders(fmt_ts(now))
        if self.faults.settings.fills_paused:
            return
        for order in self.store.due_orders(now.timestamp()):
            with self.store.locked():
                current = self.store.get_order(order.id)
                if current is not None and current.is_open and current.status != "held":
                    self._evaluate(current)

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
