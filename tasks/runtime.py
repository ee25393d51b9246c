"""Per-process resources, built once after fork: settings, database, event publisher,
brokerage. Tasks receive them from here; nothing reaches through `current_app`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import redis

# Imported here, in the worker's parent before it forks, rather than on a task's first use: the
# SDK takes seconds to import, which would otherwise stall each pool process's first order.
import adapters.alpaca
import adapters.market_data
from core.brokerage import Brokerage
from core.market_data import ReferencePrices
from core.risk import RiskLimits
from core.settings import DEFAULT_REDIS_URL, Settings, get_settings
from db.engine import Database
from db.publisher import EventPublisher, attach_publisher
from tasks.crashpoints import crash_point

if TYPE_CHECKING:
    from adapters.notifier import AppriseNotifier


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def database(self) -> Database:
        if not self.settings.database_url:
            raise RuntimeError("ARBITER_DATABASE_URL is not set (run `arbiter up`, or set it)")
        # No ping per checkout (a round trip per transaction): the tasks retry on a dropped
        # connection, and SQLAlchemy replaces the pool's stale connections when it sees one.
        return Database(
            self.settings.database_url, application_name=f"arbiter-{os.getpid()}", pre_ping=False
        )

    @cached_property
    def publisher(self) -> EventPublisher:
        """Publishes each committed transaction's events; the database's after-commit hook."""
        publisher = attach_publisher(
            self.database,
            self.settings.redis_url or DEFAULT_REDIS_URL,
            self.settings.event_channel_prefix,
        )
        publisher.before_publish = lambda: crash_point("after_commit_before_publish")
        return publisher

    @cached_property
    def redis(self) -> redis.Redis:
        """For locks and the pending-signal notes (the broker has its own connections)."""
        url = self.settings.redis_url or DEFAULT_REDIS_URL
        return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    @cached_property
    def brokerage(self) -> Brokerage:
        from tasks.metrics import counting

        return counting(adapters.alpaca.AlpacaBrokerage.from_settings(self.settings), self.redis)

    @cached_property
    def notifier(self) -> AppriseNotifier:
        from adapters.notifier import AppriseNotifier

        return AppriseNotifier(timeout_s=self.settings.notify_timeout_s)

    @cached_property
    def reference_prices(self) -> ReferencePrices:
        return ReferencePrices(
            adapters.market_data.AlpacaMarketData.from_settings(self.settings),
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


_runtime: tuple[int, Runtime] | None = None


def runtime() -> Runtime:
    """This process's runtime; a forked child builds its own."""
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        built = Runtime(get_settings())
        _ = built.publisher  # wire the after-commit hook before the first unit of work
        _runtime = (os.getpid(), built)
    return _runtime[1]
