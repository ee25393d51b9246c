"""Notifications: from the durable event history to each rule's target, at least once and
without duplicates.

dispatch (beat, one at a time): reads the history past its cursor for the types some rule
wants, writes one delivery row per (rule, event) (a unique pair, so a second look at the same
event adds nothing), and returns the new deliveries' ids for `deliver` tasks. Past the rule's
per-minute allowance a delivery is `held` for the rule's next digest.

The cursor trails the newest event by `SETTLE_S` of database time and the events past it are
read again on each pass: a transaction that took an earlier `seq` but committed later is still
seen (the unique pair makes the second look harmless).

deliver (a task per delivery): `pending` -> `sending` (committed before the call) -> `sent`;
a failure goes back to `pending` for a retry, or `failed` once retries are spent. A delivery
left `sending` by a killed worker is sent again by the sweep once its attempt must be over:
the one window for a duplicate is a crash after the target accepted and before `sent` commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotificationFailed
from core.events import Event
from core.notifications import DAILY_REPORT, Message, RuleView, describe, digest
from db import notifications as store
from db.engine import Database
from db.models import EventRecord, Order, TickerOwnership
from db.outbox import record_to_event

log = logging.getLogger(__name__)

SETTLE_S = 150.0  # longer than any transaction that writes events (task time limit 120 s)
DIGEST_WINDOW_S = 60
BATCH = 500


class Notifier(Protocol):
    def send(self, url: str, message: Message) -> None: ...


@dataclass(frozen=True)
class Dispatched:
    new: list[int]  # deliveries to send now
    held: int  # deliveries waiting for a digest
    lost: list[int]  # deliveries whose task went missing: to send again


def dispatch(
    database: Database,
    env_urls: Sequence[str],
    *,
    digest_after: int,
    pending_after_s: float,
    sending_after_s: float,
) -> Dispatched:
    with database.unit_of_work() as uow:
        session = uow.session
        cursor = store.lock_cursor(session)
        rules = store.active_rules(session, env_urls)
        views = [store.rule_view(rule) for rule in rules]
        wanted = sorted({t for view in views for t in view.event_types})
        now, head = store.database_now_and_head(session)
        confirmed = int(cursor.get("confirmed", 0))
        new: list[int] = []
        held = 0
        if wanted:
            recent = store.sent_recently(session, [v.id for v in views], DIGEST_WINDOW_S)
            records = session.scalars(
                select(EventRecord)
                .where(EventRecord.seq > confirmed, EventRecord.type.in_(wanted))
                .order_by(EventRecord.seq)
                .limit(BATCH)
            ).all()
            for record in records:
                event = record_to_event(record)
                for view in views:
                    if not view.wants(event):
                        continue
                    over = recent.get(view.id, 0) >= digest_after
                    delivery = _delivery(session, view, event, held=over)
                    if delivery is None:
                        continue
                    recent[view.id] = recent.get(view.id, 0) + 1
                    if over:
                        held += 1
                    else:
                        new.append(delivery)
            if len(records) == BATCH:
                head = records[-1].seq  # the rest next pass
        store.save_cursor(session, _advance(cursor, now, head))
        lost = store.stale_deliveries(session, pending_after_s, sending_after_s)
        uow.commit()
    return Dispatched(new, held, [i for i in lost if i not in new])


def _advance(cursor: dict[str, Any], now: float, head: int) -> dict[str, Any]:
    """Remember (now, head); confirm the newest head seen at least SETTLE_S ago."""
    marks = [m for m in cursor.get("marks", []) if isinstance(m, list) and len(m) == 2]
    marks.append([head, now])
    confirmed = int(cursor.get("confirmed", 0))
    keep = []
    for seq, seen_at in marks:
        if now - seen_at >= SETTLE_S:
            confirmed = max(confirmed, int(seq))
        else:
            keep.append([int(seq), float(seen_at)])
    return {"confirmed": confirmed, "marks": keep[-200:]}


def _delivery(session: Session, view: RuleView, event: Event, *, held: bool) -> int | None:
    message = describe(event, _order_context(session, event))
    return store.add_delivery(
        session,
        {
            "rule_id": view.id,
            "event_id": event.id,
            "event_type": event.type.value,
            "status": "held" if held else "pending",
            "title": message.title,
            "body": message.body,
            "kind": message.kind,
        },
    )


def _order_context(session: Session, event: Event) -> dict[str, Any]:
    """What a message says beyond the envelope: the order's side and quantity, and the lock of
    the ticker's owner."""
    context: dict[str, Any] = {}
    if event.order_id is not None:
        order = session.get(Order, event.order_id)
        if order is not None:
            context.update(side=order.side, quantity=_plain(order.quantity))
    if event.ticker:
        lock = session.scalar(
            select(TickerOwnership.locked_until).where(
                TickerOwnership.ticker == event.ticker, TickerOwnership.released_at.is_(None)
            )
        )
        if lock is not None:
            context["owner_locked_until"] = lock
    return context


def _plain(value: Any) -> str | None:
    if value is None:
        return None
    text = format(value.normalize(), "f") if hasattr(value, "normalize") else str(value)
    return text


def deliver(
    database: Database,
    notifier: Notifier,
    delivery_id: int,
    *,
    last_attempt: bool,
    sending_after_s: float,
    before_send: Callable[[], None] = lambda: None,
) -> str:
    """Send one delivery; returns its status afterwards. Raises NotificationFailed when the
    send failed and another attempt should follow."""
    with database.unit_of_work() as uow:
        claimed = store.claim_delivery(uow.session, delivery_id, sending_after_s)
        if claimed is None:
            return "skipped"
        row, url = claimed
        message = Message(row.title, row.body, row.kind)
        uow.commit()
    before_send()
    try:
        notifier.send(url, message)
    except NotificationFailed as exc:
        status = "failed" if last_attempt else "pending"
        with database.unit_of_work() as uow:
            store.finish_delivery(uow.session, [delivery_id], status, str(exc))
            uow.commit()
        if last_attempt:
            log.warning("notification %d failed for good: %s", delivery_id, exc)
            return status
        raise
    with database.unit_of_work() as uow:
        store.finish_delivery(uow.session, [delivery_id], "sent")
        uow.commit()
    return "sent"


def send_digests(
    database: Database, notifier: Notifier, *, older_than_s: float = DIGEST_WINDOW_S
) -> int:
    """One message per rule for the deliveries held past its allowance, once the oldest has
    waited `older_than_s`; returns how many digests went out. A failed digest stays held and
    is tried on the next pass."""
    with database.sessions() as session:
        due = store.rules_with_due_digest(session, older_than_s)
    sent = 0
    for rule_id in due:
        with database.unit_of_work() as uow:
            rows = store.lock_held(uow.session, rule_id)
            url = store.rule_url(uow.session, rule_id)
            if not rows or url is None:
                continue
            message = digest([Message(r.title, r.body, r.kind) for r in rows], DIGEST_WINDOW_S)
            try:
                notifier.send(url, message)
            except NotificationFailed as exc:
                for row in rows:
                    row.last_error = str(exc)[:1000]
                    row.attempts += 1
                uow.commit()
                continue
            store.finish_delivery(uow.session, [r.id for r in rows], "sent")
            for row in rows:
                row.in_digest = True
            uow.commit()
            sent += 1
    return sent


def send_report(database: Database, notifier: Notifier, message: Message) -> int:
    """The daily report to every rule that subscribes to `daily_report`."""
    with database.sessions() as session:
        urls = [r.url for r in store.list_rules(session) if DAILY_REPORT in r.event_types]
    sent = 0
    for url in urls:
        try:
            notifier.send(url, message)
            sent += 1
        except NotificationFailed as exc:
            log.warning("daily report not delivered: %s", exc)
    return sent
