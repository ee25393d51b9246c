"""`arbiter stream`: the long-running consumer of the brokerage's trade_updates, one active per
account.

Any number may run; each takes a Redis lease (`arbiter:trade-stream:<account id>`, set with
NX and a TTL, renewed by a check-and-set script every third of the TTL). The holder consumes
the stream; the others stand by and take over once a dead holder's lease expires. A holder
that cannot renew (Redis unreachable, lease taken) stops consuming before trying again. An
overlap of two consumers for a moment would book nothing twice: settlement locks the order row
and keys each fill.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import redis

from adapters.trade_stream import TradeUpdateStream
from bootstrap import Runtime
from core.brokerage import BrokerOrder
from core.errors import BrokerageUnavailable
from core.settings import Settings
from service_layer import trade_updates

log = logging.getLogger(__name__)

LEASE_PREFIX = "arbiter:trade-stream:"

# Take the lease when free, extend it when already ours; 1 when we hold it afterwards.
_HOLD = """
local holder = redis.call('get', KEYS[1])
if holder == false then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Lease:
    """A Redis key held by one process at a time, kept alive by `hold()` calls."""

    def __init__(self, client: redis.Redis, key: str, ttl_s: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def hold(self) -> bool:
        """Take or extend the lease; False when another holds it or Redis is unreachable."""
        try:
            return bool(self.client.eval(_HOLD, 1, self.key, self.token, self.ttl_ms))
        except redis.RedisError as exc:
            log.warning("trade stream lease %s: Redis unreachable (%s)", self.key, exc)
            return False

    def release(self) -> None:
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:  # it expires on its own
            log.warning("releasing trade stream lease %s failed: %s", self.key, exc)

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else None


class Consumer:
    """Stand by or consume until `stop` is set."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.runtime = Runtime(settings)
        self.runtime.publisher  # noqa: B018 - attaches the after-commit event publisher
        self.booked = 0

    def _account_id(self) -> str | None:
        delay = 0.5
        while not self.stop.is_set():
            try:
                return self.runtime.brokerage.account().account_id
            except BrokerageUnavailable as exc:
                log.warning("brokerage unreachable (%s): retrying in %.1fs", exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)
        return None

    def run(self) -> None:
        account = self._account_id()
        if account is None:
            return
        ttl = self.settings.stream_lease_ttl_s
        lease = Lease(self.runtime.redis, LEASE_PREFIX + account, ttl)
        log.info("trade stream consumer %s for account %s", lease.token, account)
        standing_by = False
        while not self.stop.is_set():
            if not lease.hold():
                if not standing_by:
                    log.info("standby: another consumer holds %s", lease.key)
                    standing_by = True
                self.stop.wait(ttl / 3)
                continue
            standing_by = False
            try:
                self._consume(lease, ttl)
            finally:
                lease.release()
        self.runtime.database.dispose()

    def _consume(self, lease: Lease, ttl: float) -> None:
        url = self.settings.trade_stream_url
        stream = TradeUpdateStream(
            url, self.settings.brokerage_key, self.settings.brokerage_secret, self._book
        )
        log.info("active: consuming trade updates from %s", url)
        stream.start()
        try:
            while not self.stop.wait(ttl / 3):
                if not lease.hold():
                    log.warning("lost lease %s: stopping this consumer's stream", lease.key)
                    return
                if not stream.alive:
                    log.error("the trade stream thread ended: reconnecting")
                    return
        finally:
            stream.stop()

    def _book(self, event: str, report: BrokerOrder) -> None:
        started = time.perf_counter()
        booked = trade_updates.book(self.runtime.database, report)
        if booked is None:
            return
        self.booked += 1
        if booked.transitions or booked.filled or booked.flagged:
            log.info(
                "trade update %s for order %s (%s): %s%s in %.1f ms",
                event,
                booked.order_id,
                report.client_order_id,
                " -> ".join(booked.transitions) or booked.state,
                ", fill booked" if booked.filled else "",
                (time.perf_counter() - started) * 1000,
            )
