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
    """Current reference price per symbol. Thread-safe; pinned prices override the walk."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._prices: dict[str, Decimal] = {}
        self._pinned: dict[str, Decimal] = {}
        self._tick = 0

    def price(self, symbol: str) -> Decimal:
        with self._lock:
            if symbol in self._pinned:
                return self._pinned[symbol]
            return self._prices.setdefault(symbol, base_price(symbol, self._seed))

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
            return {**self._prices, **self._pinned}

    def advance(self) -> None:
        """One tick of the walk for every symbol seen so far."""
        with self._lock:
            self._tick += 1
            for symbol, old in self._prices.items():
                step = Decimal(str(round(_unit("walk", symbol, self._seed, self._tick) * 2 - 1, 6)))
                new = (old * (1 + step * _STEP)).quantize(_CENT, ROUND_HALF_EVEN)
                self._prices[symbol] = max(new, _CENT)
