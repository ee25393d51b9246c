"""The database's clock: the one clock every age comparison uses (workers' clocks drift)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

_NOW = "arbiter_db_now"
# The database's clock as Unix seconds (the wall clock, not the transaction's start), as a
# column to select beside others.
DB_EPOCH = func.extract("epoch", func.clock_timestamp())


def db_now(session: Session) -> datetime:
    """The database's current time (the transaction's start, as `now()` in SQL). Constant
    within a transaction, so asked once per transaction."""
    transaction = session.get_transaction()
    known: tuple[object, datetime] | None = session.info.get(_NOW)
    if transaction is not None and known is not None and known[0] is transaction:
        return known[1]
    value: datetime | None = session.connection().scalar(select(func.now()))
    assert value is not None
    remember_now(session, value)
    return value


def remember_now(session: Session, value: datetime) -> None:
    """`now()` as a query that asked for it anyway returned it, for `db_now` to reuse."""
    session.info[_NOW] = (session.get_transaction(), value)


def db_epoch(session: Session) -> float:
    """The database's current time as Unix seconds (the clock wall time, not the
    transaction's start)."""
    value = session.scalar(select(DB_EPOCH))
    return float(value or 0)
