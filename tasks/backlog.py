"""How long the oldest pipeline message has been waiting: what the sweeps must not mistake for
a lost one.

An order whose next message still waits in a deep queue (or in a worker's reserved and unacked
set) has not stalled: re-enqueueing it would only pile copies on the queue. Kombu's Redis
messages carry no timestamp, so each sweep notes, on Redis's clock, when it first saw the
newest message of each pipeline queue (the list's head: kombu LPUSHes and BRPOPs from the
tail) and each unacked delivery. The queue is first in, first out: when a message noted
earlier reaches the tail (next to be taken), it has waited at least since it was noted. A
message never noted has waited less than one sweep interval, which the caller adds.

An unacked delivery is waiting only while a live worker could still be holding it: longer than
the task time limit plus the longest retry backoff (`held_max_s`), no running worker holds a
message. It was abandoned (its worker was killed or stopped, or its ack was lost while Redis
was away) and waits only for the transport to restore it after the visibility timeout; counted
as a backlog it would push the sweeps' thresholds up for as long as it sits there, so the
orders it holds up would never be re-driven nor their signals resent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis

from strategy_client.pending import server_time

WATCH_KEY = "arbiter:backlog-watch"
UNACKED_KEY = "unacked"  # kombu's Redis transport default (`unacked_key`)
KEEP_S = 6 * 3600.0  # a note older than this, on nothing current, is dropped


def _message_id(raw: bytes | str | None) -> str | None:
    """The task id of a queued message."""
    if raw is None:
        return None
    try:
        message = json.loads(raw)
        return str(message["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return "unreadable:" + str(hash(raw))


def oldest_waiting_s(
    client: redis.Redis, queues: Iterable[str], *, held_max_s: float | None = None
) -> float | None:
    """Seconds the next message to be taken (or the oldest unacked one) has been seen
    waiting, or None when nothing waits. An unacked delivery seen for longer than
    `held_max_s` is abandoned, not waiting (see the module's docstring)."""
    now = server_time(client)
    seen = {
        (k.decode() if isinstance(k, bytes) else str(k)): float(v)
        for k, v in client.hgetall(WATCH_KEY).items()
    }
    waiting: set[str] = set()  # what is next to be taken, and what workers hold unacked
    noted: set[str] = set()  # what to note now (the newest of each queue, and the above)
    consumed: set[str] = set()  # notes of messages taken off their queue since
    for queue in queues:
        oldest = _message_id(client.lindex(queue, -1))
        newest = _message_id(client.lindex(queue, 0))
        mine = {key: at for key, at in seen.items() if key.startswith(f"q:{queue}:")}
        if oldest is None:
            consumed |= set(mine)  # the queue is empty
            continue
        waiting.add(f"q:{queue}:{oldest}")
        noted.add(f"q:{queue}:{newest}")
        if f"q:{queue}:{oldest}" in mine:  # first in, first out: anything noted before it left
            cutoff = mine[f"q:{queue}:{oldest}"]
            consumed |= {key for key, at in mine.items() if at < cutoff}
    held: set[str] = set()  # unacked deliveries: noted, so their age is known
    for tag in client.hkeys(UNACKED_KEY):
        held.add("u:" + (tag.decode() if isinstance(tag, bytes) else str(tag)))
    if held_max_s is not None:
        abandoned = {key for key in held if key in seen and now - seen[key] > held_max_s}
    else:
        abandoned = set()
    waiting |= held - abandoned
    noted |= waiting | held
    stale = [
        key
        for key, at in seen.items()
        if key not in noted and (key in consumed or key.startswith("u:") or now - at > KEEP_S)
    ]
    with client.pipeline() as pipe:
        if stale:
            pipe.hdel(WATCH_KEY, *stale)
        for key in noted - set(seen):
            pipe.hset(WATCH_KEY, key, now)
        pipe.execute()
    if not waiting:
        return None
    return max((now - seen[key] for key in waiting if key in seen), default=0.0)
