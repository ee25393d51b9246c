"""The market-data port over alpaca-py's StockHistoricalDataClient (Alpaca market data v2, or
the bundled simulator, which serves the same latest-trade and latest-quote routes).

Errors are translated as the trading adapter translates them (adapters.alpaca.translate); a
symbol the source has no data for is None, not an error."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlparse

from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockLatestQuoteRequest, StockLatestTradeRequest

from adapters.alpaca import one_attempt, translate
from core.errors import BrokerageRejected
from core.market_data import LatestQuote
from core.settings import Settings

T = TypeVar("T")


def _positive(value: object) -> Decimal | None:
    if value is None:
        return None
    number = Decimal(str(value))
    return number if number.is_finite() and number > 0 else None


ALPACA_DATA_URL = "https://data.alpaca.markets"


def market_data_url(settings: Settings) -> str:
    """ARBITER_MARKET_DATA_URL; else Alpaca's data API for an Alpaca trading URL (its trading
    hosts serve no market data); else the brokerage URL (the simulator serves both)."""
    if settings.market_data_url:
        return settings.market_data_url
    host = urlparse(settings.brokerage_url).hostname or ""
    return ALPACA_DATA_URL if host.endswith("alpaca.markets") else settings.brokerage_url


class AlpacaMarketData:
    """core.market_data.MarketData over alpaca-py. `calls` counts HTTP requests."""

    def __init__(
        self,
        url: str,
        api_key: str,
        secret_key: str,
        *,
        timeout_s: float = 5.0,
        feed: DataFeed = DataFeed.IEX,
    ) -> None:
        self.url = url.rstrip("/")
        self.feed = feed
        self.calls = 0
        self.client = one_attempt(
            StockHistoricalDataClient(api_key, secret_key, url_override=self.url),
            self.url,
            timeout_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> AlpacaMarketData:
        return cls(
            market_data_url(settings),
            settings.brokerage_key,
            settings.brokerage_secret,
            timeout_s=settings.brokerage_timeout_s,
        )

    def _call(self, fn: Callable[[], T]) -> T | None:
        self.calls += 1
        try:
            return fn()
        except Exception as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            if isinstance(translated, BrokerageRejected) and translated.status_code == 404:
                return None  # no data for this symbol
            raise translated from exc

    def latest_trade_price(self, symbol: str) -> Decimal | None:
        request = StockLatestTradeRequest(symbol_or_symbols=symbol, feed=self.feed)
        answer: Any = self._call(lambda: self.client.get_stock_latest_trade(request))
        trade = (answer or {}).get(symbol)
        return None if trade is None else _positive(trade.price)

    def latest_quote(self, symbol: str) -> LatestQuote | None:
        request = StockLatestQuoteRequest(symbol_or_symbols=symbol, feed=self.feed)
        answer: Any = self._call(lambda: self.client.get_stock_latest_quote(request))
        quote = (answer or {}).get(symbol)
        if quote is None:
            return None
        return LatestQuote(_positive(quote.bid_price), _positive(quote.ask_price))


__all__ = ["AlpacaMarketData"]
