"""Seeded, deterministic reference prices: each symbol starts at a base price derived from
(symbol, seed) and takes a small deterministic random step on every engine tick."""

from __future__ import annotations

import hashlib
import threading
from decimal import ROUND_HALF_EVEN, Decimal

_CENT = Decimal("0.01")
_STEP = Decimal("0.0005")  # at most 5 bp per tick, so tests can reason about price ranges


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def base_price(symbol: str, seed: int) -> Decimal:
    """Between 20.00 and 500.00, fixed per (symbol, seed)."""
    return (Decimal(20) + Decimal(int(_unit("base", symbol, seed) * 48_000)) / 100).quantize(_CENT)


def chance(seed: int, *parts: object) -> float:
    """A seeded draw in [0, 1) keyed by parts (e.g. a client_order_id), independent of order."""
    return _unit("chance", seed, *parts)


class PriceBook:
    """Current reference price per symbol. Thread-safe; pinned prices override the walk.

    The walk is applied lazily: a tick only counts, and a symbol takes the steps it missed
    when it is next read, so a tick costs nothing however many symbols exist (walking them all
    every 20 ms took a tenth of a core at 1,000 symbols). A symbol nobody read for longer takes
    only the last `MAX_CATCH_UP` of the steps it missed (about 70 ms of work at most).
    """

    MAX_CATCH_UP = 30_000  # ten minutes of 20 ms ticks

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._prices: dict[str, tuple[Decimal, int]] = {}  # price as of that tick
        self._pinned: dict[str, Decimal] = {}
        self._tick = 0

    def price(self, symbol: str) -> Decimal:
        with self._lock:
            walked = self._walked(symbol)
            return self._pinned.get(symbol, walked)

    def _walked(self, symbol: str) -> Decimal:
        """The symbol's walk brought up to the current tick (the lock is held)."""
        price, as_of = self._prices.get(symbol) or (base_price(symbol, self._seed), self._tick)
        if self._tick - as_of > self.MAX_CATCH_UP:
            as_of = self._tick - self.MAX_CATCH_UP
        for tick in range(as_of + 1, self._tick + 1):
            step = Decimal(str(round(_unit("walk", symbol, self._seed, tick) * 2 - 1, 6)))
            price = max((price * (1 + step * _STEP)).quantize(_CENT, ROUND_HALF_EVEN), _CENT)
        self._prices[symbol] = (price, self._tick)
        return price

    def pin(self, symbol: str, price: Decimal | None) -> None:
        """Fix a symbol's price (None releases it back to the walk)."""
        with self._lock:
            if price is None:
                self._pinned.pop(symbol, None)
            else:
                self._pinned[symbol] = price.quantize(_CENT, ROUND_HALF_EVEN)

    @property
    def tick(self) -> int:
        """How many steps the walk has taken (a trade id for market data)."""
        with self._lock:
            return self._tick

    def snapshot(self) -> dict[str, Decimal]:
        with self._lock:
            walked = {symbol: self._walked(symbol) for symbol in list(self._prices)}
            return {**walked, **self._pinned}

    def advance(self) -> None:
        """One tick of the walk for every symbol seen so far (taken when each is next read)."""
        with self._lock:
            self._tick += 1
