"""`arbiter stream`: book the brokerage's trade updates as they happen, until Ctrl-C or
SIGTERM. Run two (or more) for a standby: one per account consumes, the others wait."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from arbiter.commands import common


def stream() -> None:
    """Consume the brokerage's trade_updates websocket and book each fill within milliseconds.

    One consumer per account is active (a Redis lease); another `arbiter stream` stands by and
    takes over when the active one dies. Reconciliation still polls as the safety net."""
    from tasks import logs
    from tasks.stream import Consumer

    settings = common.settings()
    if not settings.database_url:
        common.fail(common.NO_DATABASE)
    logs.configure(settings.log_level, settings.log_json)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with common.guarded():
        Consumer(settings, stop).run()
