"""The composition root: `bootstrap(settings)` builds the one runtime a process uses.

Worker, beat, the CLI (and a web app) all start here: settings are read once by the entry
point and handed in; the database, event publisher, Redis client, brokerage and notifier
adapters are built from them on first use, and nothing else in the process builds its own.
Nothing here reads settings at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import redis

from core.brokerage import Brokerage
from core.market_data import ReferencePrices
from core.risk import RiskLimits
from core.settings import DEFAULT_REDIS_URL, Settings
from db.engine import Database
from db.publisher import EventPublisher, attach_publisher

if TYPE_CHECKING:
    from adapters.notifier import AppriseNotifier


class NotConfigured(RuntimeError):
    """A resource was asked for whose settings are missing."""


@dataclass
class Runtime:
    """Per-process resources, built lazily from `settings`."""

    settings: Settings
    application_name: str = "arbiter"
    pool_size: int = 5
    # Workers skip the ping per checkout (a round trip per transaction): tasks retry on a
    # dropped connection, and SQLAlchemy replaces stale connections when it sees one.
    pre_ping: bool = True
    # Wraps the brokerage adapter when it is built (the workers count its calls for /metrics).
    wrap_brokerage: Callable[[Brokerage], Brokerage] | None = None

    @cached_property
    def database(self) -> Database:
        if not self.settings.database_url:
            raise NotConfigured("ARBITER_DATABASE_URL is not set (run `arbiter up`, or set it)")
        return Database(
            self.settings.database_url,
            pool_size=self.pool_size,
            application_name=self.application_name,
            pre_ping=self.pre_ping,
        )

    @cached_property
    def publisher(self) -> EventPublisher:
        """Publishes each committed transaction's events; the database's after-commit hook.
        Without it (the CLI), events wait in the outbox for the relay."""
        return attach_publisher(
            self.database,
            self.settings.redis_url or DEFAULT_REDIS_URL,
            self.settings.event_channel_prefix,
        )

    @cached_property
    def redis(self) -> redis.Redis:
        """For locks and the pending-signal notes (the Celery broker has its own connections)."""
        url = self.settings.redis_url or DEFAULT_REDIS_URL
        return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    @cached_property
    def brokerage(self) -> Brokerage:
        from adapters.alpaca import AlpacaBrokerage

        adapter: Brokerage = AlpacaBrokerage.from_settings(self.settings)
        return self.wrap_brokerage(adapter) if self.wrap_brokerage else adapter

    @cached_property
    def notifier(self) -> AppriseNotifier:
        from adapters.notifier import AppriseNotifier

        return AppriseNotifier(timeout_s=self.settings.notify_timeout_s)

    @cached_property
    def reference_prices(self) -> ReferencePrices:
        """The market's reference prices (cached for reference_price_ttl_s)."""
        from adapters.market_data import AlpacaMarketData

        return ReferencePrices(
            AlpacaMarketData.from_settings(self.settings),
            ttl_s=self.settings.reference_price_ttl_s,
        )

    @cached_property
    def risk_limits(self) -> RiskLimits:
        s = self.settings
        return RiskLimits(
            max_order_quantity=s.max_order_quantity,
            max_order_notional=s.max_order_notional,
            max_open_orders=s.max_open_orders_per_strategy,
            max_signals_per_minute=s.max_signals_per_minute,
        )

    def close(self) -> None:
        """Release what was built (a short-lived process, e.g. one CLI command)."""
        if "database" in self.__dict__:
            self.database.dispose()
        if "redis" in self.__dict__:
            self.redis.close()


def bootstrap(
    settings: Settings, *, application_name: str = "arbiter", pool_size: int = 5,
    pre_ping: bool = True,
) -> Runtime:
    return Runtime(settings, application_name, pool_size, pre_ping)
