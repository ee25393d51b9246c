"""What the worker exposes for /metrics that Postgres does not hold: reconciliation pass
timings and brokerage call errors, kept as counters in Redis hashes (shared by every worker
process and machine; the web's collector reads them at scrape time). Recording never fails
the work it describes."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import redis

from core.brokerage import Brokerage
from core.errors import BrokerageRejected, OperationalError, TransientError

log = logging.getLogger(__name__)

RECONCILE_KEY = "arbiter:metrics:reconcile"
BROKERAGE_ERRORS_KEY = "arbiter:metrics:brokerage_errors"


def record_reconcile_pass(client: redis.Redis, duration_s: float, counts: dict[str, int]) -> None:
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(RECONCILE_KEY, "passes", 1)
        pipe.hincrbyfloat(RECONCILE_KEY, "duration_sum_s", duration_s)
        pipe.hset(RECONCILE_KEY, mapping={"last_duration_s": duration_s,
                                          "last_finished_at": time.time()})  # fmt: skip
        for name in ("errors", "flagged", "transitioned", "fills_applied", "orphans"):
            if counts.get(name):
                pipe.hincrby(RECONCILE_KEY, name, counts[name])
        pipe.execute()
    except redis.RedisError as exc:
        log.debug("could not record reconciliation metrics: %s", exc)


def record_position_mismatches(client: redis.Redis, mismatches: int) -> None:
    try:
        client.hincrby(RECONCILE_KEY, "position_passes", 1)
        if mismatches:
            client.hincrby(RECONCILE_KEY, "position_mismatches", mismatches)
    except redis.RedisError as exc:
        log.debug("could not record reconciliation metrics: %s", exc)


class CountingBrokerage:
    """The brokerage, counting each failed call by method and error class (a rejection is an
    answer, not an error, and is not counted)."""

    def __init__(self, inner: Brokerage, client: redis.Redis) -> None:
        self._inner = inner
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith("_") or not callable(attribute):
            return attribute
        return self._counted(name, attribute)

    def _counted(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return call(*args, **kwargs)
            except BrokerageRejected:
                raise
            except (TransientError, OperationalError) as exc:
                with contextlib.suppress(redis.RedisError):
                    self._client.hincrby(BROKERAGE_ERRORS_KEY, f"{name}|{type(exc).__name__}", 1)
                raise

        return counted


def counting(inner: Brokerage, client: redis.Redis) -> Brokerage:
    return cast(Brokerage, CountingBrokerage(inner, client))
