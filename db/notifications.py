"""Notification rules and deliveries in Postgres. The session belongs to the caller: nothing
here commits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.notifications import IMPORTANT_EVENT_TYPES, RuleView
from db.models import EventRecord, NotificationDelivery, NotificationRule, SystemFlag

CURSOR = "notify_cursor"
OPERATOR = "operator"
ENV = "env"


def add_rule(
    session: Session,
    event_types: Sequence[str],
    url: str,
    strategy: str | None = None,
    ticker: str | None = None,
    origin: str = OPERATOR,
) -> NotificationRule:
    rule = NotificationRule(
        event_types=list(event_types), url=url, strategy=strategy, ticker=ticker, origin=origin
    )
    session.add(rule)
    ensure_cursor(session)
    session.flush()
    return rule


def list_rules(session: Session) -> list[NotificationRule]:
    return list(session.scalars(select(NotificationRule).order_by(NotificationRule.id)))


def remove_rule(session: Session, rule_id: int) -> None:
    removed = session.execute(
        delete(NotificationRule)
        .where(NotificationRule.id == rule_id, NotificationRule.origin == OPERATOR)
        .returning(NotificationRule.id)
    ).first()
    if removed is None:
        raise InvalidInput(f"no notification rule {rule_id} (see `arbiter notify rules list`)")


def active_rules(session: Session, env_urls: Sequence[str]) -> list[NotificationRule]:
    """The operator's rules; while there are none, one rule per ARBITER_NOTIFY_URLS entry for
    the important event types (kept as rows so that their deliveries have a rule)."""
    rules = list_rules(session)
    operator = [r for r in rules if r.origin == OPERATOR]
    if operator:
        return operator
    by_url = {r.url: r for r in rules if r.origin == ENV}
    wanted = [url for url in dict.fromkeys(env_urls) if url]
    for url, rule in by_url.items():
        if url not in wanted:
            session.delete(rule)
    return [
        by_url.get(url) or add_rule(session, IMPORTANT_EVENT_TYPES, url, origin=ENV)
        for url in wanted
    ]


def rule_view(rule: NotificationRule) -> RuleView:
    return RuleView(rule.id, frozenset(rule.event_types), rule.strategy, rule.ticker)


# --- the dispatcher's place in the event history ---------------------------------------------


def ensure_cursor(session: Session) -> None:
    """The dispatcher starts where the history ends when the first rule appears: rules see
    what happens from then on, not the past."""
    head = session.scalar(select(func.coalesce(func.max(EventRecord.seq), 0)))
    session.execute(
        insert(SystemFlag)
        .values(key=CURSOR, value={"confirmed": int(head or 0), "marks": []})
        .on_conflict_do_nothing(index_elements=["key"])
    )


def lock_cursor(session: Session) -> dict[str, Any]:
    """The dispatcher's cursor, row-locked for this transaction (two dispatchers queue up)."""
    ensure_cursor(session)
    flag = session.scalars(
        select(SystemFlag).where(SystemFlag.key == CURSOR).with_for_update()
    ).one()
    session.refresh(flag)
    return dict(flag.value)


def save_cursor(session: Session, value: dict[str, Any]) -> None:
    flag = session.get(SystemFlag, CURSOR)
    assert flag is not None
    flag.value = value


def database_now_and_head(session: Session) -> tuple[float, int]:
    """The database's clock (epoch seconds) and the newest event seq."""
    now, head = session.execute(
        text("SELECT extract(epoch FROM now())::float8, coalesce(max(seq), 0) FROM events")
    ).one()
    return float(now), int(head)


def sent_recently(session: Session, rule_ids: Sequence[int], window_s: int) -> dict[int, int]:
    """Per rule, the deliveries created within the last `window_s` seconds."""
    if not rule_ids:
        return {}
    rows = session.execute(
        select(NotificationDelivery.rule_id, func.count())
        .where(
            NotificationDelivery.rule_id.in_(rule_ids),
            NotificationDelivery.created_at > _ago(window_s),
        )
        .group_by(NotificationDelivery.rule_id)
    ).all()
    return {rule_id: count for rule_id, count in rows}


def add_delivery(session: Session, values: dict[str, Any]) -> int | None:
    """The new delivery's id, or None when this (rule, event) is already known."""
    return session.scalar(
        insert(NotificationDelivery)
        .values(**values)
        .on_conflict_do_nothing(constraint="uq_notification_deliveries_rule_event")
        .returning(NotificationDelivery.id)
    )


def stale_deliveries(session: Session, pending_after_s: float, sending_after_s: float) -> list[int]:
    """Deliveries whose task was lost (a Redis restart, a killed worker): pending or sending
    for longer than any retry or attempt could take."""
    return list(
        session.scalars(
            select(NotificationDelivery.id)
            .where(
                (
                    (NotificationDelivery.status == "pending")
                    & (NotificationDelivery.updated_at < _ago(pending_after_s))
                )
                | (
                    (NotificationDelivery.status == "sending")
                    & (NotificationDelivery.updated_at < _ago(sending_after_s))
                )
            )
            .order_by(NotificationDelivery.id)
            .limit(500)
        )
    )


def _ago(seconds: float) -> Any:
    return func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def claim_delivery(
    session: Session, delivery_id: int, sending_after_s: float
) -> tuple[NotificationDelivery, str] | None:
    """Lock a delivery that is due and mark it `sending` (attempts + 1); with its rule's URL.
    None when it is sent, failed, held, being sent by another worker, or gone."""
    row = session.scalars(
        select(NotificationDelivery)
        .where(NotificationDelivery.id == delivery_id)
        .with_for_update(skip_locked=True)
    ).first()
    if row is None or row.status not in ("pending", "sending"):
        return None
    if row.status == "sending":
        crashed = session.scalar(select(row.updated_at < _ago(sending_after_s)))
        if not crashed:
            return None  # another attempt is under way
    url = rule_url(session, row.rule_id)
    if url is None:
        return None
    row.status = "sending"
    row.attempts += 1
    return row, url


def finish_delivery(
    session: Session, delivery_ids: Sequence[int], status: str, error: str | None = None
) -> None:
    for row in session.scalars(
        select(NotificationDelivery).where(NotificationDelivery.id.in_(delivery_ids))
    ):
        row.status = status
        row.last_error = error[:1000] if error else None
        if status == "sent":
            row.sent_at = func.now()


def rules_with_due_digest(session: Session, older_than_s: float) -> list[int]:
    """Rules whose oldest held delivery has waited `older_than_s` seconds."""
    return list(
        session.scalars(
            select(NotificationDelivery.rule_id)
            .where(NotificationDelivery.status == "held")
            .group_by(NotificationDelivery.rule_id)
            .having(func.min(NotificationDelivery.created_at) < _ago(older_than_s))
        )
    )


def lock_held(session: Session, rule_id: int) -> list[NotificationDelivery]:
    return list(
        session.scalars(
            select(NotificationDelivery)
            .where(NotificationDelivery.rule_id == rule_id, NotificationDelivery.status == "held")
            .order_by(NotificationDelivery.id)
            .with_for_update(skip_locked=True)
        )
    )


def rule_url(session: Session, rule_id: int) -> str | None:
    return session.scalar(select(NotificationRule.url).where(NotificationRule.id == rule_id))


def list_deliveries(
    session: Session, *, failed_only: bool = False, limit: int = 50
) -> list[NotificationDelivery]:
    query = select(NotificationDelivery).order_by(NotificationDelivery.id.desc()).limit(limit)
    if failed_only:
        query = query.where(NotificationDelivery.status == "failed")
    return list(session.scalars(query))
