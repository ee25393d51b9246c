"""Conflict alerts: print a readable line whenever strategies collide over a ticker.

    ARBITER_DATABASE_URL=... ARBITER_REDIS_URL=... python examples/conflict_alerts.py

The id of the last alert shown is kept in a small file (default `.arbiter/conflict_alerts.last`),
so a restarted alerter first shows, from the durable history, what it missed while it was away,
then follows the live stream. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from core.errors import InvalidInput
from core.event_payloads import ConflictDecided, OwnershipTransferred
from core.events import Event, EventType
from core.settings import get_settings
from strategy_client.subscriber import EventSubscriber

ALERT_TYPES = (
    EventType.CONFLICT_DETECTED,
    EventType.ORDER_BLOCKED_BY_CONFLICT,
    EventType.PRIORITY_OVERRIDE,
    EventType.OWNERSHIP_TRANSFERRED,
)
HEADLINES = {
    EventType.CONFLICT_DETECTED: "CONFLICT",
    EventType.ORDER_BLOCKED_BY_CONFLICT: "BLOCKED",
    EventType.PRIORITY_OVERRIDE: "OVERRIDE",
    EventType.OWNERSHIP_TRANSFERRED: "HANDOVER",
}


def describe(event: Event) -> str:
    """One line a person can read at a glance."""
    when = event.occurred_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    line = f"[{when}] {HEADLINES[event.type]:<8} {event.ticker or '?'}: "
    data = event.data()
    if isinstance(data, ConflictDecided):
        line += (
            f"{data.requesting_strategy_name} ({data.requesting_priority}) {data.action.value}s "
            f"against owner {data.owning_strategy_name} ({data.owning_priority})"
        )
        reason = data.reasoning
    elif isinstance(data, OwnershipTransferred):
        line += (
            f"from {data.from_strategy_name} to {data.to_strategy_name}, "
            f"{data.position_moved} shares moved"
        )
        reason = data.reason
    else:
        return line + f"strategy {event.strategy or '?'}"
    if event.order_id is not None:
        line += f", order #{event.order_id}"
    return f"{line} — {reason}"


class LastSeen:
    """The last alert's event id, rewritten atomically after each alert."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def write(self, event_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(event_id)
        partial.replace(self.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=Path(".arbiter/conflict_alerts.last"),
                        help="file holding the last alert's event id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    settings = get_settings()
    if not settings.database_url or not settings.redis_url:
        print("set ARBITER_DATABASE_URL and ARBITER_REDIS_URL (or run `arbiter up`)",
              file=sys.stderr)
        return 2
    state = LastSeen(args.state)

    def alert(event: Event) -> None:
        print(describe(event), flush=True)
        state.write(str(event.id))

    subscriber = EventSubscriber(settings.redis_url, settings.database_url,
                                 settings.event_channel_prefix)
    subscriber.on(ALERT_TYPES, alert)
    last_seen = state.read()
    try:
        try:
            subscriber.run(threading.Event(), last_seen_id=last_seen)
        except InvalidInput as exc:  # the saved id was purged from the history
            print(f"{exc}; following live alerts only", file=sys.stderr)
            subscriber.run(threading.Event())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
