"""The kill switch, kept in Postgres (the source of truth) as a system flag."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.event_payloads import KillSwitchToggled
from core.events import Event, EventType
from db.clock import remember_now
from db.models import SystemFlag
from db.outbox import emit

KILL_SWITCH = "kill_switch"


_READ = select(
    select(SystemFlag.value).where(SystemFlag.key == KILL_SWITCH).scalar_subquery(), func.now()
)


def kill_switch(session: Session) -> dict[str, Any]:
    """The switch's value. The database's clock comes in the same round trip (db/clock.py
    keeps it for the transaction): the steps that read the switch go on to judge ages."""
    value, now = session.execute(_READ).one()
    remember_now(session, now)
    return value if value is not None else {"on": False}


def kill_switch_on(session: Session) -> bool:
    return bool(kill_switch(session).get("on"))


def set_kill_switch(session: Session, on: bool, reason: str, actor: str) -> None:
    value = {"on": on, "reason": reason, "by": actor, "at": datetime.now(UTC).isoformat()}
    session.execute(
        insert(SystemFlag)
        .values(key=KILL_SWITCH, value=value)
        .on_conflict_do_update(index_elements=["key"], set_={"value": value})
    )
    emit(
        session,
        Event.of(
            EventType.KILL_SWITCH_ACTIVATED if on else EventType.KILL_SWITCH_DEACTIVATED,
            KillSwitchToggled(reason=reason),
            source=actor,
        ),
    )
