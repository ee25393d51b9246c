"""Health and freshness for the overview: Postgres, Redis, the brokerage, queue depths, the
outbox backlog and the last pass of each beat task, each with the time it was read.

The brokerage is asked at most once every few seconds per process (a slow or dead brokerage
must not make every page slow); the answer shown says when it was read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.errors import ArbiterError
from db.models import EventRecord
from strategy_client import routing
from tasks.metrics import RECONCILE_KEY

QUEUES = (routing.SIGNALS_QUEUE, routing.ORDERS_QUEUE, routing.MAINTENANCE_QUEUE)
# Kombu's Redis transport keeps one list per priority step: "q", "q\x06\x163", ...
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
BROKERAGE_CHECK_EVERY_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    as_of: datetime


def postgres(session: Session) -> Check:
    try:
        version = session.scalar(text("SHOW server_version"))
        return Check("PostgreSQL", True, f"up · {version}", datetime.now(UTC))
    except SQLAlchemyError as exc:
        return Check("PostgreSQL", False, f"down: {type(exc).__name__}", datetime.now(UTC))


def redis_check(client: redis.Redis) -> Check:
    try:
        started = time.perf_counter()
        client.ping()
        ms = (time.perf_counter() - started) * 1000
        return Check("Redis", True, f"up · ping {ms:.1f} ms", datetime.now(UTC))
    except redis.RedisError as exc:
        return Check("Redis", False, f"down: {type(exc).__name__}", datetime.now(UTC))


class BrokerageProbe:
    """The brokerage account, read at most every BROKERAGE_CHECK_EVERY_S per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, Check, dict[str, Any]] | None = None

    def check(self, brokerage: Any) -> tuple[Check, dict[str, Any]]:
        with self._lock:
            if self._last and time.monotonic() - self._last[0] < BROKERAGE_CHECK_EVERY_S:
                return self._last[1], self._last[2]
            try:
                account = brokerage.account()
                info = {"status": account.status, "cash": account.cash,
                        "equity": account.equity, "buying_power": account.buying_power}  # fmt: skip
                result = Check("Brokerage", True, f"up · account {account.status}",
                               datetime.now(UTC))  # fmt: skip
            except (ArbiterError, OSError) as exc:
                info = {}
                result = Check("Brokerage", False, f"unreachable: {short_error(exc)}",
                               datetime.now(UTC))  # fmt: skip
            self._last = (time.monotonic(), result, info)
            return result, info


PROBE = BrokerageProbe()


def queue_depths(client: redis.Redis) -> dict[str, int | None]:
    """Messages waiting per Celery queue (None when Redis cannot say)."""
    depths: dict[str, int | None] = {}
    try:
        pipe = client.pipeline()
        for queue in QUEUES:
            for suffix in PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
        counts = pipe.execute()
    except redis.RedisError:
        return dict.fromkeys(QUEUES)
    for index, queue in enumerate(QUEUES):
        step = len(PRIORITY_SUFFIXES)
        depths[queue] = int(sum(counts[index * step : (index + 1) * step]))
    return depths


def last_reconciliation(client: redis.Redis) -> dict[str, Any] | None:
    """The worker's record of reconciliation passes (tasks.metrics): when the last open-order
    pass finished, how long it took, and the running counts."""
    try:
        raw = client.hgetall(RECONCILE_KEY)
    except redis.RedisError:
        return None
    values = {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]
    if "last_finished_at" not in values:
        return None
    try:
        return {
            "finished_at": datetime.fromtimestamp(float(values["last_finished_at"]), UTC),
            "duration_ms": float(values.get("last_duration_s", 0)) * 1000,
            "passes": int(values.get("passes", 0)),
            "position_passes": int(values.get("position_passes", 0)),
            "position_mismatches": int(values.get("position_mismatches", 0)),
            "flagged": int(values.get("flagged", 0)),
            "fills_applied": int(values.get("fills_applied", 0)),
        }
    except ValueError:
        return None


def outbox_backlog(session: Session) -> int:
    """Events committed but not yet published on Redis (the relay owes them)."""
    return int(
        session.scalar(
            select(func.count()).select_from(EventRecord).where(EventRecord.published_at.is_(None))
        )
        or 0
    )


def now() -> datetime:
    return datetime.now(UTC)


def short_error(exc: Exception) -> str:
    """One readable line: the first clause of the error, not a wall of urllib3 text."""
    text = str(exc).split(": HTTPConnectionPool", 1)[0].split("(Caused by", 1)[0]
    return text.strip()[:120]
