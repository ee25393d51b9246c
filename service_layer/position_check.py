"""Position reconciliation: per ticker, the strategies' positions against the brokerage's.

A difference counts only when the same two quantities are seen on two passes in a row (the
previous pass's differences live in system_flags), so a fill landing between our read and the
brokerage's is not reported: order reconciliation books it before the next pass."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.brokerage import Brokerage
from core.event_payloads import PositionMismatch
from core.events import Event, EventType
from db.engine import Database
from db.models import (
    Position,
    ReviewItem,
    Strategy,
    SystemFlag,
)
from db.outbox import emit
from db.ownership import lock_ticker

POSITION_SUSPECTS = "reconcile_positions.suspects"  # system_flags key: last pass's differences

# -- positions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    ticker: str
    ours: Decimal
    theirs: Decimal
    by_strategy: dict[str, str]
    confirmed: bool
    review_opened: bool = False


def reconcile_positions(
    database: Database, brokerage: Brokerage, *, confirmations: int = 2
) -> list[Mismatch]:
    """Per ticker, the strategies' summed positions against the brokerage's.

    A fill can land between reading theirs and reading ours, so a difference counts only once
    it is seen with the same two quantities on `confirmations` consecutive passes (kept in
    system_flags); a racing fill is settled by order reconciliation before the next pass and
    the difference goes away. A confirmed mismatch emits RECONCILIATION_MISMATCH and opens one
    review item per ticker (none while one is open; its details follow the latest values)."""
    theirs = {p.symbol: p.quantity for p in brokerage.list_positions()}
    mismatches: list[Mismatch] = []
    with database.unit_of_work() as uow:
        session = uow.session
        ours: dict[str, Decimal] = {
            ticker: quantity
            for ticker, quantity in session.execute(
                select(Position.ticker, func.sum(Position.quantity)).group_by(Position.ticker)
            )
        }
        flag = session.get(SystemFlag, POSITION_SUSPECTS, with_for_update=True)
        previous: dict[str, list[str]] = dict(flag.value) if flag else {}
        seen: dict[str, list[str]] = {}
        for ticker in sorted(set(ours) | set(theirs)):
            mine, broker = ours.get(ticker, Decimal(0)), theirs.get(ticker, Decimal(0))
            if mine == broker:
                continue
            key = [_num(mine), _num(broker)]
            streak = int(previous[ticker][2]) + 1 if previous.get(ticker, [])[:2] == key else 1
            seen[ticker] = [*key, str(streak)]
            confirmed = streak >= confirmations
            opened = confirmed and _open_position_review(session, ticker, mine, broker)
            mismatches.append(
                Mismatch(ticker, mine, broker, _by_strategy(session, ticker), confirmed, opened)
            )
        session.execute(
            insert(SystemFlag)
            .values(key=POSITION_SUSPECTS, value=seen)
            .on_conflict_do_update(index_elements=["key"], set_={"value": seen})
        )
        uow.commit()
    return mismatches


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _by_strategy(session: Session, ticker: str) -> dict[str, str]:
    rows = session.execute(
        select(Position.strategy_id, Position.quantity).where(Position.ticker == ticker)
    )
    names = {s.id: s.name for s in session.scalars(select(Strategy))}
    return {names.get(sid, str(sid)): _num(q) for sid, q in rows if q}


def _open_position_review(session: Session, ticker: str, ours: Decimal, theirs: Decimal) -> bool:
    """Open (or refresh) the ticker's one review item; emit an event when it is new or its
    values changed. True when an item was opened."""
    lock_ticker(session, ticker)
    by_strategy = _by_strategy(session, ticker)
    details = {"ours": _num(ours), "theirs": _num(theirs), "by_strategy": by_strategy}
    reason = (
        f"position mismatch in {ticker}: Arbiter's strategies hold {details['ours']}, "
        f"the brokerage {details['theirs']}"
    )
    item = session.scalar(
        select(ReviewItem).where(
            ReviewItem.kind == "position",
            ReviewItem.ticker == ticker,
            ReviewItem.resolved_at.is_(None),
        )
    )
    if (
        item is not None
        and (item.details or {}).get("ours") == details["ours"]
        and (item.details or {}).get("theirs") == details["theirs"]
    ):
        return False
    if item is None:
        session.add(ReviewItem(kind="position", ticker=ticker, reason=reason, details=details))
    else:
        item.reason, item.details = reason, details
    session.flush()
    emit(
        session,
        Event.of(
            EventType.RECONCILIATION_MISMATCH,
            PositionMismatch(
                reason=reason,
                ours=Decimal(_num(ours)),
                theirs=Decimal(_num(theirs)),
                by_strategy={name: Decimal(q) for name, q in by_strategy.items()},
            ),
            ticker=ticker,
        ),
    )
    return item is None
