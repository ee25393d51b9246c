"""How long the oldest pipeline message has been waiting: what the sweeps must not mistake for
a lost one.

An order whose next message still waits in a deep queue (or in a worker's reserved and unacked
set) has not stalled: re-enqueueing it would only pile copies on the queue. Kombu's Redis
messages carry no timestamp, so each sweep notes when it first saw the message at the head of
each pipeline queue and each unacked delivery, on Redis's clock; the oldest such note is the
backlog's age (an underestimate by at most one sweep interval, which the caller adds).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis

from strategy_client.pending import server_time

WATCH_KEY = "arbiter:backlog-watch"
UNACKED_KEY = "unacked"  # kombu's Redis transport default (`unacked_key`)


def _head_id(raw: bytes | str | None) -> str | None:
    """The task id of a queued message (the next to be taken is at the list's tail)."""
    if raw is None:
        return None
    try:
        message = json.loads(raw)
        return str(message["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return "unreadable:" + str(hash(raw))


def oldest_waiting_s(client: redis.Redis, queues: Iterable[str]) -> float | None:
    """Seconds the oldest waiting pipeline message has been seen waiting (0 when first seen
    now), or None when nothing waits."""
    now = server_time(client)
    current: set[str] = set()
    for queue in queues:
        head = _head_id(client.lindex(queue, -1))
        if head is not None:
            current.add(f"q:{head}")
    for tag in client.hkeys(UNACKED_KEY):
        current.add("u:" + (tag.decode() if isinstance(tag, bytes) else str(tag)))
    seen = {
        (k.decode() if isinstance(k, bytes) else str(k)): float(v)
        for k, v in client.hgetall(WATCH_KEY).items()
    }
    stale = [key for key in seen if key not in current]
    fresh = {key: now for key in current if key not in seen}
    with client.pipeline() as pipe:
        if stale:
            pipe.hdel(WATCH_KEY, *stale)
        for key, first_seen in fresh.items():
            pipe.hset(WATCH_KEY, key, first_seen)
        pipe.execute()
    if not current:
        return None
    return max((now - seen[key] for key in current if key in seen), default=0.0)
