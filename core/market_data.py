"""The market-data port: a reference price per ticker for pre-trade risk and unrealised P&L.

A reference price is the latest trade's price, else the mid of the latest quote (SPEC §9).
Adapters implement `MarketData`; `ReferencePrices` adds the few seconds of caching in front of
any of them. None means "no price can be had": the caller decides (risk rejects the order).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class LatestQuote:
    bid: Decimal | None
    ask: Decimal | None


class MarketData(Protocol):
    """Raise core.errors.BrokerageUnavailable when the source cannot be asked right now."""

    def latest_trade_price(self, symbol: str) -> Decimal | None: ...

    def latest_quote(self, symbol: str) -> LatestQuote | None: ...


def reference_from(trade: Decimal | None, quote: LatestQuote | None) -> Decimal | None:
    """Latest trade, else the quote's mid (both sides positive), else nothing."""
    if trade is not None and trade > 0:
        return trade
    if quote is None or quote.bid is None or quote.ask is None:
        return None
    if quote.bid <= 0 or quote.ask <= 0 or quote.ask < quote.bid:
        return None
    return (quote.bid + quote.ask) / 2


class ReferencePrices:
    """Reference prices through a MarketData, cached per ticker for `ttl_s` seconds (a miss
    is cached too, for a shorter while, so a ticker without data is not asked in a loop)."""

    def __init__(
        self,
        source: MarketData,
        *,
        ttl_s: float = 5.0,
        miss_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.ttl_s = ttl_s
        self.miss_ttl_s = miss_ttl_s
        self.clock = clock
        self._cache: dict[str, tuple[float, Decimal | None]] = {}
        self._lock = threading.Lock()

    def price(self, symbol: str) -> Decimal | None:
        now = self.clock()
        with self._lock:
            hit = self._cache.get(symbol)
        if hit is not None and hit[0] > now:
            return hit[1]
        trade = self.source.latest_trade_price(symbol)
        quote = None if trade is not None else self.source.latest_quote(symbol)
        price = reference_from(trade, quote)
        ttl = self.ttl_s if price is not None else self.miss_ttl_s
        with self._lock:
            self._cache[symbol] = (now + ttl, price)
        return price
