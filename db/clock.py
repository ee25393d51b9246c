"""The database's clock: the one clock every age comparison uses (workers' clocks drift)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session


def db_now(session: Session) -> datetime:
    """The database's current time (the transaction's start, as `now()` in SQL)."""
    value: datetime | None = session.scalar(select(func.now()))
    assert value is not None
    return value


def db_epoch(session: Session) -> float:
    """The database's current time as Unix seconds (the clock wall time, not the
    transaction's start)."""
    value = session.scalar(select(func.extract("epoch", func.clock_timestamp())))
    return float(value or 0)
