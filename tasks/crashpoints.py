"""Named places where a fault test can make the process SIGKILL itself.

Off unless ARBITER_CRASH_POINTS names them (comma-separated, each optionally `name:N` to die
on the N-th pass in a process). With ARBITER_CRASH_STATE_DIR set, each point fires once
across all processes (a marker file), so a restarted worker does not die again; with
ARBITER_CRASH_WHOLE_WORKER=1 the whole process group dies (a Celery worker's main process
and its pool), not just the pool child. Costs one dict lookup when off."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

NAMES = (
    "after_brokerage_accepted",  # the brokerage holds the order, Arbiter has not recorded it
    "before_ack",  # the next chain step is published, this task is not yet acked
    "after_commit_before_publish",  # the change is committed, its events not yet published
    "mid_reconciliation",  # part of a reconciliation pass is committed
    "notify_before_send",  # a delivery is marked `sending`, the target not yet called
)

_armed: dict[str, int] = {}
for item in filter(None, os.environ.get("ARBITER_CRASH_POINTS", "").split(",")):
    name, _, nth = item.strip().partition(":")
    if name not in NAMES:
        raise ValueError(f"unknown crash point {name!r}; known: {', '.join(NAMES)}")
    _armed[name] = int(nth or 1)
_passes: Counter[str] = Counter()


def crash_point(name: str) -> None:
    if name not in _armed:
        return
    _passes[name] += 1
    if _passes[name] != _armed[name] or not _claim(name):
        return
    if os.environ.get("ARBITER_CRASH_WHOLE_WORKER") == "1":
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _claim(name: str) -> bool:
    """True if this process may fire `name` (always, unless fired once already elsewhere)."""
    state_dir = os.environ.get("ARBITER_CRASH_STATE_DIR")
    if not state_dir:
        return True
    try:
        fd = os.open(Path(state_dir) / f"{name}.fired", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True
