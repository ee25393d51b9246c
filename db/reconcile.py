"""Reconciliation with the brokerage (the source of truth) and recovery of stalled orders.

Services on a Database and a Brokerage, no Celery: the beat tasks, the startup recovery and the
`arbiter reconcile` command call them. Every brokerage report goes through `db.settlement.settle`,
so a fill is booked exactly once whoever sees it first. Each order is settled in its own short
transaction, so a crash in the middle of a pass loses nothing already settled.

Batching: one `list_open_orders()` (the adapter pages it) answers for every open order; the
orders not open there are looked up one by one when they are few, else with one
`list_orders_since(oldest - margin)`. Before an order is failed or flagged because the brokerage
does not know it, one direct lookup by client_order_id confirms it (a bounded number per pass).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.brokerage import Brokerage, BrokerOrder, Side
from core.errors import ArbiterError
from core.events import Event, EventType
from core.settings import Settings
from core.states import OrderState, is_terminal
from db.engine import Database
from db.models import (
    Order,
    OrderTransition,
    Position,
    ReviewItem,
    Strategy,
    SystemFlag,
    TickerOwnership,
)
from db.order_manager import OrderManager
from db.outbox import emit
from db.ownership import lock_ticker, release_if_unused
from db.settlement import release_unfilled_claim, settle

log = logging.getLogger(__name__)
S = OrderState

ACTOR = "arbiter.reconcile_orders"
RECOVERY_ACTOR = "arbiter.recover_stalled"
CLIENT_ORDER_ID_PREFIX = "arb-"
NEVER_RECEIVED = "never received by the brokerage"

DIRECT_LOOKUPS_MAX = 10  # more orders not open at the brokerage than this: one list call instead
CONFIRM_PER_PASS = 20  # direct lookups confirming "unknown at the brokerage" before acting on it
SINCE_MARGIN = timedelta(minutes=10)  # clock skew between us and the brokerage
CANCEL_RACE_WINDOW_S = 600.0  # how long an order Arbiter cancelled itself is watched for fills
MAX_REDRIVES = 5  # a stalled order re-driven this often goes to a human instead
STALLED_BATCH = 500  # stalled orders handled per pass (the rest wait for the next)
POSITION_SUSPECTS = "reconcile_positions.suspects"  # system_flags key: last pass's differences

# Where a stalled order resumes: the pipeline step (task `arbiter.<step>`) that moves it on.
NEXT_STEP: dict[OrderState, str] = {
    S.SIGNAL_RECEIVED: "validate",
    S.VALIDATING: "check_conflict",
    S.ORDER_PENDING: "submit",
}
# Actors that settle on the brokerage's word; a CANCELLED written by anyone else may race a fill.
_SETTLING_ACTORS = ("arbiter.submit", ACTOR, "arbiter.startup_recovery")


# -- reports ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderChange:
    order_id: int | None
    client_order_id: str
    ticker: str | None
    before: str | None
    after: str | None
    filled: bool = False
    note: str | None = None


@dataclass
class ReconcileReport:
    checked: int = 0
    transitioned: int = 0
    fills_applied: int = 0
    failed_never_received: int = 0
    flagged: int = 0
    orphans: int = 0
    errors: int = 0
    brokerage_calls: int = 0
    changes: list[OrderChange] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "changes"}


@dataclass(frozen=True)
class _Snapshot:
    id: int
    client_order_id: str
    ticker: str | None
    state: OrderState
    filled_quantity: Decimal
    brokerage_order_id: str | None
    created_at: datetime
    last_submit_at: datetime | None
    needs_manual_review: bool

    @property
    def sent_at(self) -> datetime:
        return self.last_submit_at or self.created_at


class _CallCounter:
    """HTTP requests as counted by the adapter (`calls`), else our own calls."""

    def __init__(self, brokerage: Brokerage) -> None:
        self.brokerage = brokerage
        self.logical = 0
        self.start = self._adapter_count()

    def _adapter_count(self) -> int | None:
        calls = getattr(self.brokerage, "calls", None)
        return calls if isinstance(calls, int) else None

    def tick(self) -> None:
        self.logical += 1

    @property
    def total(self) -> int:
        now = self._adapter_count()
        return self.logical if now is None or self.start is None else now - self.start


# -- open orders -----------------------------------------------------------------------------


def reconcile_open_orders(
    database: Database,
    brokerage: Brokerage,
    *,
    never_received_grace_s: float,
    now: datetime | None = None,
    cancel_race_window_s: float = CANCEL_RACE_WINDOW_S,
    actor: str = ACTOR,
    after_first_commit: Callable[[], None] | None = None,
) -> ReconcileReport:
    """Bring every order the brokerage may hold in line with it; see the module docstring.
    `after_first_commit` runs once the first order of the pass is committed (the Celery task
    hangs its `mid_reconciliation` crash point there)."""
    now = now or datetime.now(UTC)
    report = ReconcileReport()
    counter = _CallCounter(brokerage)
    with database.unit_of_work() as uow:
        candidates = _candidates(uow.session, now - timedelta(seconds=cancel_race_window_s))

    counter.tick()
    reports: dict[str, BrokerOrder] = {o.client_order_id: o for o in brokerage.list_open_orders()}
    remaining = [c for c in candidates if c.client_order_id not in reports]
    looked_up: set[str] = set()
    if 0 < len(remaining) <= DIRECT_LOOKUPS_MAX:
        for snap in remaining:
            counter.tick()
            found = brokerage.get_by_client_order_id(snap.client_order_id)
            looked_up.add(snap.client_order_id)
            if found is not None:
                reports[found.client_order_id] = found
    elif remaining:
        counter.tick()
        since = min(c.created_at for c in remaining) - SINCE_MARGIN
        for o in brokerage.list_orders_since(since):
            reports.setdefault(o.client_order_id, o)

    # Orders the brokerage holds that were not candidates: terminal here, or not ours at all.
    known = {c.client_order_id for c in candidates}
    others = [coid for coid in reports if coid not in known]
    with database.unit_of_work() as uow:
        extra = _snapshots(uow.session, others)
    by_coid = {c.client_order_id: c for c in candidates}
    by_coid.update((s.client_order_id, s) for s in extra)

    confirms = 0
    committed_once = False
    for coid, snap in by_coid.items():
        broker = reports.get(coid)
        report.checked += 1
        if (
            broker is None
            and coid not in looked_up
            and _acts_on_unknown(snap, now, never_received_grace_s)
        ):
            if confirms >= CONFIRM_PER_PASS:
                continue  # confirmed on a later pass
            confirms += 1
            counter.tick()
            broker = brokerage.get_by_client_order_id(coid)
        if not _needs_work(snap, broker, now, never_received_grace_s):
            continue
        try:
            change = _settle_one(database, snap, broker, now, never_received_grace_s, actor)
        except (ArbiterError, ValueError) as exc:
            log.exception("reconciling order %s failed", snap.id)
            report.errors += 1
            _flag(database, snap.id, f"reconciliation could not settle it: {exc}", actor)
            continue
        if change is None:
            continue
        _count(report, change)
        if not committed_once:
            committed_once = True
            if after_first_commit is not None:
                after_first_commit()

    for coid in (c for c in reports if c not in by_coid):
        if coid.startswith(CLIENT_ORDER_ID_PREFIX) and _record_orphan(database, reports[coid]):
            report.orphans += 1
            report.changes.append(
                OrderChange(None, coid, reports[coid].symbol, None, None, note="orphan")
            )
    report.brokerage_calls = counter.total
    return report


def _candidates(session: Session, cancelled_after: datetime) -> list[_Snapshot]:
    """Orders the brokerage may hold: sent, partly filled, pending with an attempt, and orders
    Arbiter itself cancelled lately (a fill may have raced the cancel)."""
    cancelled_by_us = select(OrderTransition.order_id).where(
        OrderTransition.order_id == Order.id,
        OrderTransition.to_state == S.CANCELLED.value,
        OrderTransition.actor.notin_(_SETTLING_ACTORS),
    )
    query = _snapshot_query().where(
        or_(
            Order.state.in_([S.ORDER_SENT.value, S.PARTIAL_FILLED.value]),
            and_(Order.state == S.ORDER_PENDING.value, Order.submit_attempts > 0),
            and_(
                Order.state == S.CANCELLED.value,
                Order.submit_attempts > 0,
                Order.updated_at >= cancelled_after,
                cancelled_by_us.exists(),
            ),
        )
    )
    return [_Snapshot(*row) for row in session.execute(query.order_by(Order.id))]


def _snapshots(session: Session, client_order_ids: list[str]) -> list[_Snapshot]:
    if not client_order_ids:
        return []
    query = _snapshot_query().where(Order.client_order_id.in_(client_order_ids))
    return [_Snapshot(*row) for row in session.execute(query)]


def _snapshot_query() -> Any:
    return select(
        Order.id,
        Order.client_order_id,
        Order.ticker,
        Order.state,
        Order.filled_quantity,
        Order.brokerage_order_id,
        Order.created_at,
        Order.last_submit_at,
        Order.needs_manual_review,
    )


def _acts_on_unknown(snap: _Snapshot, now: datetime, grace_s: float) -> bool:
    """Would the brokerage not knowing this order change anything? (then confirm it first)"""
    state = OrderState(snap.state)
    if state in (S.ORDER_SENT, S.PARTIAL_FILLED):
        return not snap.needs_manual_review  # already flagged: the human has it
    return state is S.ORDER_PENDING and snap.sent_at < now - timedelta(seconds=grace_s)


def _needs_work(snap: _Snapshot, broker: BrokerOrder | None, now: datetime, grace_s: float) -> bool:
    """Cheap pre-check on the snapshot, so 10,000 unchanged open orders cost no transaction."""
    state = OrderState(snap.state)
    if broker is None:
        return _acts_on_unknown(snap, now, grace_s)
    try:
        theirs = broker.state
    except ArbiterError:
        return True  # settle meets the unreadable status and it is flagged
    if broker.filled_quantity > snap.filled_quantity:
        return True  # a fill is never dropped, whatever state we hold
    if is_terminal(state):
        # Dead here but live there: a human must look (a pending cancel is not news).
        live_there = not is_terminal(theirs) and state is not S.CANCELLED
        return live_there and not snap.needs_manual_review
    return theirs is not state or snap.brokerage_order_id is None


def _settle_one(
    database: Database,
    snap: _Snapshot,
    broker: BrokerOrder | None,
    now: datetime,
    grace_s: float,
    actor: str,
) -> OrderChange | None:
    with database.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        order = manager.lock(snap.id)
        if order.state != snap.state:
            return None  # moved on meanwhile (submit settled it): next pass looks again
        before = order.state
        note: str | None = None
        filled = False
        if broker is not None:
            result = settle(uow.session, order, broker, actor=actor)
            uow.commit()  # also when only the brokerage order id was recorded
            if not result.changed:
                return None
            filled, note = result.filled, result.flagged
        elif before == S.ORDER_PENDING.value:
            sent_at = order.last_submit_at or order.created_at
            if sent_at >= now - timedelta(seconds=grace_s):
                return None  # the submit may still be on its way
            manager.transition(order, S.FAILED, reason=NEVER_RECEIVED, actor=actor)
            if order.side == Side.BUY.value:
                release_unfilled_claim(uow.session, order)
            note = NEVER_RECEIVED
        elif before in (S.ORDER_SENT.value, S.PARTIAL_FILLED.value):
            note = "the brokerage does not know this order, which Arbiter holds as sent"
            manager.flag_for_review(order, note, actor=actor)
        else:
            return None
        uow.commit()
        return OrderChange(
            order.id, order.client_order_id, order.ticker, before, order.state, filled, note
        )


def _count(report: ReconcileReport, change: OrderChange) -> None:
    report.changes.append(change)
    if change.before != change.after:
        report.transitioned += 1
    if change.filled:
        report.fills_applied += 1
    if change.note == NEVER_RECEIVED:
        report.failed_never_received += 1
    elif change.note:
        report.flagged += 1


def _flag(database: Database, order_id: int, reason: str, actor: str) -> None:
    try:
        with database.unit_of_work() as uow:
            OrderManager(uow.session).flag_for_review(order_id, reason[:2000], actor=actor)
            uow.commit()
    except Exception:
        log.exception("flagging order %s for review failed", order_id)


def _record_orphan(database: Database, broker: BrokerOrder) -> bool:
    """A brokerage order with our prefix and no order here: one review item and one event."""
    coid = broker.client_order_id
    with database.unit_of_work() as uow:
        session = uow.session
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"orphan:{coid}"))))
        if session.scalar(
            # Once per brokerage order, ever: a human who resolved it has decided.
            select(ReviewItem.id).where(
                ReviewItem.kind == "order",
                ReviewItem.details["client_order_id"].astext == coid,
            )
        ):
            return False
        reason = (
            f"brokerage holds order {broker.brokerage_order_id} ({coid}, {broker.side.value} "
            f"{broker.quantity} {broker.symbol}, {broker.status}) that Arbiter has no record of"
        )
        details = {
            "client_order_id": coid,
            "brokerage_order_id": broker.brokerage_order_id,
            "symbol": broker.symbol,
            "side": broker.side.value,
            "quantity": str(broker.quantity),
            "filled_quantity": str(broker.filled_quantity),
            "status": broker.status,
        }
        session.add(ReviewItem(kind="order", ticker=broker.symbol, reason=reason, details=details))
        emit(
            session,
            Event(
                type=EventType.RECONCILIATION_MISMATCH,
                client_order_id=coid,
                ticker=broker.symbol,
                payload={"kind": "unknown_order", "reason": reason, **details},
            ),
        )
        uow.commit()
    return True


# -- stalled orders --------------------------------------------------------------------------


@dataclass
class StalledReport:
    redrive: list[tuple[int, str]] = field(default_factory=list)
    flagged: int = 0


def recover_stalled(
    database: Database, *, stalled_after_s: float, now: datetime | None = None
) -> list[tuple[int, str]]:
    """(order id, pipeline step to resume from) for orders stuck before submission; see
    NEXT_STEP (the step `validate` is the task `arbiter.validate`). An order re-driven
    MAX_REDRIVES times, or stuck in IDLE, is flagged for review instead."""
    return find_stalled(database, stalled_after_s=stalled_after_s, now=now).redrive


def find_stalled(
    database: Database, *, stalled_after_s: float, now: datetime | None = None
) -> StalledReport:
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=stalled_after_s)
    result = StalledReport()
    with database.unit_of_work() as uow:
        stalled = list(
            uow.session.scalars(
                select(Order.id)
                .where(
                    or_(
                        Order.state.in_(
                            [S.IDLE.value, S.SIGNAL_RECEIVED.value, S.VALIDATING.value]
                        ),
                        and_(Order.state == S.ORDER_PENDING.value, Order.submit_attempts == 0),
                    ),
                    Order.updated_at < cutoff,
                    Order.needs_manual_review.is_(False),
                )
                .order_by(Order.id)
                .limit(STALLED_BATCH)
            )
        )
    for order_id in stalled:
        with database.unit_of_work() as uow:
            manager = OrderManager(uow.session)
            order = manager.lock(order_id)
            state = OrderState(order.state)
            if order.updated_at >= cutoff or order.needs_manual_review:
                continue  # moved on meanwhile
            if state is S.ORDER_PENDING and order.submit_attempts > 0:
                continue  # reconciliation's business now
            step = NEXT_STEP.get(state)
            redrives = int((order.order_metadata or {}).get("redrives", 0))
            if step is None or redrives >= MAX_REDRIVES:
                why = (
                    f"stalled in {state.value} after {redrives} re-drives"
                    if step is not None
                    else "stalled in IDLE: intake never completed"
                )
                manager.flag_for_review(order, why, actor=RECOVERY_ACTOR)
                result.flagged += 1
            else:
                # Counting re-drives also touches updated_at: the next pass waits a full period.
                manager.merge_metadata(
                    order, redrives=redrives + 1, last_redrive_at=now.isoformat()
                )
                uow.session.flush()
                result.redrive.append((order.id, step))
            uow.commit()
    return result


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
    details = {
        "ours": _num(ours),
        "theirs": _num(theirs),
        "by_strategy": _by_strategy(session, ticker),
    }
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
        Event(
            type=EventType.RECONCILIATION_MISMATCH,
            ticker=ticker,
            payload={"kind": "position", "reason": reason, **details},
        ),
    )
    return item is None


# -- ownership -------------------------------------------------------------------------------


def expire_ownership(database: Database) -> int:
    """Release stale claims: strategies owning a ticker with no position and no live order
    there. Locks need nothing: a `locked_until` in the past already means unlocked."""
    with database.unit_of_work() as uow:
        rows = uow.session.execute(
            select(TickerOwnership.ticker, TickerOwnership.strategy_id).where(
                TickerOwnership.released_at.is_(None)
            )
        ).all()
    released = 0
    for ticker, strategy_id in rows:
        with database.unit_of_work() as uow:
            lock_ticker(uow.session, ticker)
            if release_if_unused(
                uow.session, ticker, strategy_id, reason="stale claim: no position, no live order"
            ):
                released += 1
            uow.commit()
    return released


def locks_expired_between(database: Database, since: datetime, until: datetime) -> int:
    """Live ownerships whose lock ran out in [since, until): for the housekeeping log."""
    with database.unit_of_work() as uow:
        return int(
            uow.session.scalar(
                select(func.count())
                .select_from(TickerOwnership)
                .where(
                    TickerOwnership.released_at.is_(None),
                    TickerOwnership.locked_until >= since,
                    TickerOwnership.locked_until < until,
                )
            )
            or 0
        )


# -- start-up recovery -----------------------------------------------------------------------


def startup_recovery(
    database: Database,
    brokerage: Brokerage,
    settings: Settings,
    *,
    relay: Callable[[], int] | None = None,
    actor: str = "arbiter.startup_recovery",
) -> dict[str, Any]:
    """RECOVERY_STARTED, reconcile open orders, find stalled orders, relay the outbox,
    RECOVERY_COMPLETED with the counts. `redrive` lists what the caller must re-enqueue."""
    _emit_system(database, EventType.RECOVERY_STARTED, {"actor": actor})
    orders = reconcile_open_orders(
        database, brokerage, never_received_grace_s=settings.never_received_grace_s, actor=actor
    )
    stalled = find_stalled(database, stalled_after_s=settings.stalled_after_s)
    counts: dict[str, Any] = {
        "recovered": orders.transitioned + orders.fills_applied + len(stalled.redrive),
        "failed": orders.failed_never_received,
        "for_review": orders.flagged + orders.orphans + stalled.flagged,
        "orders": orders.counts(),
        "redriven": len(stalled.redrive),
    }
    _emit_system(database, EventType.RECOVERY_COMPLETED, counts)
    counts["relayed"] = relay() if relay is not None else 0
    counts["redrive"] = [list(item) for item in stalled.redrive]
    return counts


def _emit_system(database: Database, event_type: EventType, payload: dict[str, Any]) -> None:
    with database.unit_of_work() as uow:
        emit(uow.session, Event(type=event_type, payload=payload))
        uow.commit()


__all__ = [
    "Mismatch",
    "OrderChange",
    "ReconcileReport",
    "expire_ownership",
    "find_stalled",
    "locks_expired_between",
    "reconcile_open_orders",
    "reconcile_positions",
    "recover_stalled",
    "startup_recovery",
]
