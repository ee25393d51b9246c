"""Notifications, the pure part: which rule wants which event, what the message says in words a
trader reads, how a storm becomes one digest, and how a target URL is shown without its secrets.

The I/O (rules and deliveries in Postgres, sending through Apprise) lives in db/notifications.py,
service_layer/notifications.py and adapters/notifier.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import InvalidInput
from core.events import Event, EventType, parse_event_type

# What ARBITER_NOTIFY_URLS subscribes to when no rule is stored: what an operator must act on.
IMPORTANT_EVENT_TYPES: tuple[str, ...] = (
    "order_blocked_by_conflict",
    "priority_override",
    "order_needs_review",
    "reconciliation_mismatch",
    "kill_switch_activated",
    "kill_switch_deactivated",
    "error_occurred",
    "position_stop_loss_triggered",
)

# The daily report is not an event of the bus; rules subscribe to it by this name.
DAILY_REPORT = "daily_report"

MAX_URL_LENGTH = 2048
_TICKER = re.compile(r"[A-Z][A-Z0-9.]{0,9}")
_STRATEGY = re.compile(r"[a-z][a-z0-9_]{0,63}")
# localhost, an IPv4 address or a dotted DNS name, with an optional port.
_HOST = re.compile(r"(localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)(:\d{1,5})?")


@dataclass(frozen=True)
class RuleView:
    """A stored rule as the matcher sees it (the URL is not needed to match)."""

    id: int
    event_types: frozenset[str]
    strategy: str | None = None
    ticker: str | None = None

    def wants(self, event: Event) -> bool:
        return (
            event.type.value in self.event_types
            and (self.strategy is None or event.strategy == self.strategy)
            and (self.ticker is None or event.ticker == self.ticker)
        )


def known_event_type_names() -> frozenset[str]:
    return frozenset({member.value for member in EventType} | {DAILY_REPORT})


def parse_rule(
    events: str | Iterable[str], url: str, strategy: str | None, ticker: str | None
) -> tuple[list[str], str, str | None, str | None]:
    """Check what an operator typed for a rule; InvalidInput names the bad field."""
    names = [e for e in (events.split(",") if isinstance(events, str) else events)]
    types: list[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name.lower() == DAILY_REPORT:
            types.append(DAILY_REPORT)
            continue
        try:
            types.append(parse_event_type(name).value)
        except InvalidInput as exc:
            raise InvalidInput(f"events: {exc}") from None
    if not types:
        raise InvalidInput("events: name at least one event type, e.g. order_blocked_by_conflict")
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH or "://" not in url or not url.isprintable():
        raise InvalidInput(
            "url: an Apprise URL such as json://host/path, slack://..., discord://..."
        )
    if strategy is not None and not _STRATEGY.fullmatch(strategy):
        raise InvalidInput(f"strategy: {strategy!r} is not a strategy name")
    if ticker is not None:
        ticker = ticker.strip().upper()
        if not _TICKER.fullmatch(ticker):
            raise InvalidInput(f"ticker: {ticker!r} is not a ticker")
    return sorted(set(types)), url, strategy, ticker


def mask_url(url: str) -> str:
    """An Apprise URL with everything that may be a secret hidden: the scheme and a host name
    stay (so an operator can tell targets apart); credentials, tokens, paths and query do not."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    rest = rest.rsplit("@", 1)[-1]  # drop user:password@
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    # Tokens often sit where a host would (slack://TokenA/TokenB): only a host name stays.
    if not _HOST.fullmatch(host):
        host = "***"
    tail = "/***" if len(rest) > len(host) else ""
    return f"{scheme}://{host}{tail}"


# --- messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    # Apprise's notify types: info, success, warning, failure.
    kind: str = "info"


def _field(payload: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        value = payload.get(name)
        if value not in (None, ""):
            return value
    return default


def _when(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def describe(event: Event, order: Mapping[str, Any] | None = None) -> Message:
    """The event in words. `order` adds what the envelope does not carry (side, quantity,
    the owner's lock) when the event concerns an order."""
    p = event.payload
    order = order or {}
    ticker = event.ticker or _field(p, "ticker", default="?")
    strategy = event.strategy or _field(p, "strategy", "strategy_name", default="?")
    side = order.get("side") or _field(p, "action", "side", default="order")
    quantity = order.get("quantity")
    what = f"{side} of {quantity} {ticker}" if quantity is not None else f"{side} of {ticker}"
    reasoning = _field(p, "reasoning", "reason", default="")
    t = event.type

    if t in (EventType.ORDER_BLOCKED_BY_CONFLICT, EventType.PRIORITY_OVERRIDE):
        requester = _field(p, "requesting_strategy_name", "requesting_strategy", default=strategy)
        owner = _field(p, "owning_strategy_name", "owning_strategy", default="another strategy")
        owner_priority = _field(p, "owning_priority")
        owner_text = f"{owner} (priority {owner_priority})" if owner_priority else owner
        lock = order.get("owner_locked_until")
        if t is EventType.ORDER_BLOCKED_BY_CONFLICT:
            locked = f", locked until {_when(lock)}" if lock else ""
            body = f"{requester}'s {what} was blocked: {owner_text} owns {ticker}{locked}."
            kind = "warning"
        else:
            prio = _field(p, "requesting_priority")
            by = f"{requester} (priority {prio})" if prio else requester
            body = f"{by} took {ticker} over from {owner_text} with a {what}."
            kind = "info"
        if reasoning:
            body += f"\nReasoning: {reasoning}"
        return Message(f"Arbiter: {t.value.replace('_', ' ')} on {ticker}", body, kind)
    if t is EventType.ORDER_NEEDS_REVIEW:
        reason = _field(p, "reason", default="no reason given")
        body = f"{strategy}'s {what} needs a human look: {reason}."
        return Message(f"Arbiter: order on {ticker} needs review", body, "warning")
    if t is EventType.RECONCILIATION_MISMATCH:
        ours = _field(p, "arbiter_quantity", "ours", "expected")
        theirs = _field(p, "brokerage_quantity", "theirs", "actual")
        detail = f" Arbiter books {ours}, the brokerage holds {theirs}." if ours or theirs else ""
        body = f"Positions in {ticker} disagree with the brokerage.{detail}"
        if reasoning:
            body += f"\n{reasoning}"
        return Message(f"Arbiter: position mismatch on {ticker}", body, "failure")
    if t in (EventType.KILL_SWITCH_ACTIVATED, EventType.KILL_SWITCH_DEACTIVATED):
        on = t is EventType.KILL_SWITCH_ACTIVATED
        state = "ON: no new orders are accepted" if on else "off: orders flow again"
        body = f"The kill switch is {state}." + (f"\nReason: {reasoning}" if reasoning else "")
        return Message(f"Arbiter: kill switch {'on' if on else 'off'}", body, "warning")
    if t is EventType.ERROR_OCCURRED:
        error = _field(p, "error", "message", default="unknown error")
        where = _field(p, "task", default=event.source)
        return Message("Arbiter: error", f"{where} failed: {error}", "failure")
    if t.value == "position_stop_loss_triggered" or t.name.endswith("STOP_LOSS_TRIGGERED"):
        qty = _field(p, "quantity", default="?")
        price = _field(p, "fill_price", "price", default="?")
        stop = _field(p, "stop_price")
        at = f" (stop {stop})" if stop else ""
        body = f"{strategy}'s stop-loss on {ticker} fired: sold {qty} at {price}{at}."
        return Message(f"Arbiter: stop-loss on {ticker}", body, "warning")
    # Any other type: its name and the fields it carries, in a stable order.
    details = ", ".join(f"{k}={v}" for k, v in sorted(p.items()) if not isinstance(v, dict | list))
    subject = " ".join(x for x in (strategy if event.strategy else "", event.ticker or "") if x)
    body = f"{t.value.replace('_', ' ')}" + (f" ({subject})" if subject else "")
    if details:
        body += f": {details}"
    return Message(f"Arbiter: {t.value.replace('_', ' ')}", body)


def digest(messages: Sequence[Message], window_s: int) -> Message:
    """Many messages for one rule within `window_s` seconds, as one."""
    lines = [f"- {m.body.splitlines()[0]}" for m in messages[:50]]
    more = len(messages) - len(lines)
    if more > 0:
        lines.append(f"- ... and {more} more")
    kind = "failure" if any(m.kind == "failure" for m in messages) else "warning"
    title = f"Arbiter: {len(messages)} notifications in the last {window_s // 60 or 1} min"
    return Message(title, "\n".join(lines), kind)
