"""Signals accepted by the client but not yet recorded by intake, kept in a Redis hash.

Kombu's Redis transport takes a message off the queue (BRPOP) and records it as unacked in a
second step; a worker killed between the two would lose the signal. The client therefore
notes each signal here before enqueueing it, intake forgets it once the order is committed,
and the stalled-order sweep re-enqueues any signal left here too long (intake is idempotent,
so a signal that was merely slow is recorded once all the same).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

PENDING_KEY = "arbiter:signals:pending"


def remember(client: redis.Redis, client_order_id: str, message: dict[str, Any]) -> None:
    client.hset(PENDING_KEY, client_order_id, json.dumps({"message": message, "at": time.time()}))


def forget(client: redis.Redis, client_order_id: str) -> None:
    client.hdel(PENDING_KEY, client_order_id)


def overdue(client: redis.Redis, older_than_s: float) -> dict[str, dict[str, Any]]:
    """Signals noted longer ago than `older_than_s`: client_order_id -> message."""
    cutoff = time.time() - older_than_s
    found: dict[str, dict[str, Any]] = {}
    for raw_key, raw_value in client.hscan_iter(PENDING_KEY, count=500):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        try:
            entry = json.loads(raw_value)
            if float(entry["at"]) < cutoff:
                found[key] = entry["message"]
        except (ValueError, KeyError, TypeError):
            client.hdel(PENDING_KEY, key)  # not ours to keep: unreadable
    return found
