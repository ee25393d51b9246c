"""Named places where a fault test can make the process SIGKILL itself.

Off unless ARBITER_CRASH_POINTS names them (comma-separated, each optionally `name:N` to die
on the N-th pass). Used by the chaos and recovery tests; costs one dict lookup otherwise."""

from __future__ import annotations

import os
import signal
from collections import Counter

_armed: dict[str, int] = {}
for item in filter(None, os.environ.get("ARBITER_CRASH_POINTS", "").split(",")):
    name, _, nth = item.strip().partition(":")
    _armed[name] = int(nth or 1)
_passes: Counter[str] = Counter()

NAMES = (
    "after_brokerage_accepted",  # the brokerage holds the order, Arbiter has not recorded it
    "before_ack",  # the next chain step is published, this task is not yet acked
    "after_commit_before_publish",  # the change is committed, its events not yet published
    "mid_reconciliation",  # part of a reconciliation pass is committed
)


def crash_point(name: str) -> None:
    if name not in _armed:
        return
    _passes[name] += 1
    if _passes[name] == _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
