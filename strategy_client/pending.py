"""Signals accepted by the client but not yet recorded by intake, kept in a Redis hash.

Kombu's Redis transport takes a message off the queue (BRPOP) and records it as unacked in a
second step; a worker killed between the two would lose the signal. The client therefore
notes each signal here before enqueueing it (and takes the note back if the enqueue fails),
intake forgets it once the order is committed, and the stalled-order sweep re-enqueues any
signal left here too long (intake is idempotent, so a signal that was merely slow is recorded
once all the same). Each entry counts its resends: one resent too often is a dead letter,
handed to review instead of looping (tasks/maintenance.py).

Ages are measured on Redis's clock (TIME), never a client's or a worker's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from core.signals import client_order_id_for

PENDING_KEY = "arbiter:signals:pending"


def key_of(message: Any) -> str | None:
    """The client_order_id a raw message's safety copy is kept under: from its strategy and
    signal_id, malformed or not; None when it names neither."""
    if not isinstance(message, dict):
        return None
    strategy, signal_id = message.get("strategy"), message.get("signal_id")
    if isinstance(strategy, str) and isinstance(signal_id, str):
        return client_order_id_for(strategy, signal_id)
    return None


@dataclass(frozen=True)
class Entry:
    message: dict[str, Any]
    age_s: float
    resends: int


def server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def remember(
    client: redis.Redis, client_order_id: str, message: dict[str, Any], *, resends: int = 0
) -> None:
    entry = {"message": message, "at": server_time(client), "resends": resends}
    client.hset(PENDING_KEY, client_order_id, json.dumps(entry))


def forget(client: redis.Redis, client_order_id: str) -> None:
    client.hdel(PENDING_KEY, client_order_id)


def overdue(client: redis.Redis, older_than_s: float) -> dict[str, Entry]:
    """Signals noted longer ago than `older_than_s`: client_order_id -> entry."""
    now = server_time(client)
    found: dict[str, Entry] = {}
    for raw_key, raw_value in client.hscan_iter(PENDING_KEY, count=500):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        try:
            entry = json.loads(raw_value)
            age = now - float(entry["at"])
            if age > older_than_s:
                found[key] = Entry(entry["message"], age, int(entry.get("resends", 0)))
        except (ValueError, KeyError, TypeError):
            client.hdel(PENDING_KEY, key)  # not ours to keep: unreadable
    return found
