"""Reconciliation of open orders with the brokerage (the source of truth).

A service on a Database and a Brokerage, no Celery: the beat task, the startup recovery and the
`arbiter reconcile` command call it. Every brokerage report goes through
`service_layer.settlement.settle`, so a fill is booked exactly once whoever sees it first.
Each order is settled in its own short transaction, so a crash in the middle of a pass loses
nothing already settled.

Batching: one `list_open_orders()` (the adapter pages it) answers for every open order; the
orders not open there are looked up one by one when they are few, else with one
`list_orders_since(oldest - margin)`. Before an order is failed or flagged because the brokerage
does not know it, one direct lookup by client_order_id confirms it (a bounded number per pass).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from core.brokerage import Brokerage, BrokerOrder, Side
from core.errors import (
    ArbiterError,
    BrokerageProtocolError,
    BrokerageRejected,
    BrokerageUnavailable,
)
from core.event_payloads import UnknownOrderMismatch
from core.events import Event, EventType
from core.states import BROKERAGE_CAUSES, OrderState, is_terminal
from core.states import TransitionCause as C
from db.clock import db_now
from db.engine import Database
from db.models import (
    Order,
    OrderTransition,
    ReviewItem,
)
from db.order_manager import OrderManager
from db.outbox import emit
from service_layer import cancellation
from service_layer.settlement import release_unfilled_claim, settle, settle_legs

log = logging.getLogger(__name__)
S = OrderState

ACTOR = "arbiter.reconcile_orders"
CLIENT_ORDER_ID_PREFIX = "arb-"
NEVER_RECEIVED = "never received by the brokerage"

DIRECT_LOOKUPS_MAX = 10  # more orders not open at the brokerage than this: one list call instead
CONFIRM_PER_PASS = 20  # direct lookups confirming "unknown at the brokerage" before acting on it
SINCE_MARGIN = timedelta(minutes=10)  # clock skew between us and the brokerage
CANCEL_RACE_WINDOW_S = 600.0  # how long an order Arbiter cancelled itself is watched for fills


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
    cancels_sent: int = 0
    legs_recorded: int = 0
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
    cancel_race_window_s: float = CANCEL_RACE_WINDOW_S,
    actor: str = ACTOR,
    after_first_commit: Callable[[], None] | None = None,
) -> ReconcileReport:
    """Bring every order the brokerage may hold in line with it; see the module docstring.
    `after_first_commit` runs once the first order of the pass is committed (the Celery task
    hangs its `mid_reconciliation` crash point there)."""
    report = ReconcileReport()
    counter = _CallCounter(brokerage)
    with database.unit_of_work() as uow:
        now = db_now(uow.session)  # every age below is on the database's clock
        candidates = _candidates(uow.session, now - timedelta(seconds=cancel_race_window_s))

    counter.tick()
    reports: dict[str, BrokerOrder] = {
        o.client_order_id: o for o in _listing(brokerage.list_open_orders)
    }
    remaining = [c for c in candidates if c.client_order_id not in reports]
    looked_up: set[str] = set()
    if 0 < len(remaining) <= DIRECT_LOOKUPS_MAX:
        for snap in remaining:
            counter.tick()
            try:
                found = brokerage.get_by_client_order_id(snap.client_order_id)
            except _UNREADABLE as exc:
                log.warning("looking up %s failed (%s): next pass", snap.client_order_id, exc)
                report.errors += 1
                continue
            looked_up.add(snap.client_order_id)
            if found is not None:
                reports[found.client_order_id] = found
    elif remaining:
        counter.tick()
        since = min(c.created_at for c in remaining) - SINCE_MARGIN
        for o in _listing(lambda: brokerage.list_orders_since(since)):
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
            try:
                broker = brokerage.get_by_client_order_id(coid)
            except _UNREADABLE as exc:  # unknown stays unknown: decide on a later pass
                log.warning("confirming %s failed (%s): next pass", coid, exc)
                report.errors += 1
                continue
        if not _needs_work(snap, broker, now, never_received_grace_s):
            continue
        if broker is not None and is_terminal(OrderState(snap.state)) and _live(broker):
            # Final here, live there: nobody owns or watches it. Cancel it, and tell a human.
            counter.tick()
            stray = _cancel_stray(database, brokerage, snap, broker, actor)
            if stray is not None:
                _count(report, stray)
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

    report.cancels_sent = _send_requested_cancels(database, brokerage, reports, counter)
    report.legs_recorded = _record_missing_legs(database, brokerage, counter, actor)

    for coid in (c for c in reports if c not in by_coid):
        if coid.startswith(CLIENT_ORDER_ID_PREFIX) and _record_orphan(database, reports[coid]):
            report.orphans += 1
            report.changes.append(
                OrderChange(None, coid, reports[coid].symbol, None, None, note="orphan")
            )
    report.brokerage_calls = counter.total
    return report


def _send_requested_cancels(
    database: Database,
    brokerage: Brokerage,
    reports: dict[str, BrokerOrder],
    counter: _CallCounter,
) -> int:
    """Cancels recorded while a submission was in flight, or whose sending failed: sent now
    for each order still open at the brokerage (and not already pending its cancel)."""
    with database.unit_of_work() as uow:
        waiting = uow.session.execute(
            select(Order.id, Order.client_order_id).where(
                Order.cancel_requested_at.isnot(None),
                Order.state.in_([S.ORDER_SENT.value, S.PARTIAL_FILLED.value]),
            )
        ).all()
    sent = 0
    for order_id, coid in waiting:
        broker = reports.get(coid)
        if broker is not None and broker.status in ("pending_cancel", "canceled"):
            continue
        counter.tick()
        if cancellation.carry_out(database, brokerage, order_id) is not None:
            sent += 1
    return sent


def _record_missing_legs(
    database: Database, brokerage: Brokerage, counter: _CallCounter, actor: str
) -> int:
    """Parents of a bracket, OCO or OTO whose legs are not recorded yet (a listing does not
    nest them): each is read by its brokerage id, legs included, and settled."""
    leg = aliased(Order)
    with database.unit_of_work() as uow:
        parents = uow.session.execute(
            select(Order.id, Order.brokerage_order_id)
            .where(
                Order.order_class != "simple",
                Order.parent_order_id.is_(None),
                Order.brokerage_order_id.isnot(None),
                Order.state.in_([S.ORDER_SENT.value, S.PARTIAL_FILLED.value, S.FULLY_FILLED.value]),
                ~select(leg.id).where(leg.parent_order_id == Order.id).exists(),
            )
            .order_by(Order.id)
            .limit(CONFIRM_PER_PASS)
        ).all()
    recorded = 0
    for order_id, brokerage_id in parents:
        counter.tick()
        try:
            report = brokerage.get(str(brokerage_id))
        except (*_UNREADABLE, BrokerageRejected) as exc:
            log.warning("reading the legs of order %s failed (%s): next pass", order_id, exc)
            continue
        if not report.legs:
            continue
        with database.unit_of_work() as uow:
            order = OrderManager(uow.session).lock(order_id)
            recorded += settle_legs(uow.session, order, report, actor=actor)
            uow.commit()
    return recorded


# A brokerage answer that did not come, or could not be read: the question stays open.
_UNREADABLE = (BrokerageUnavailable, BrokerageProtocolError)
LISTING_TRIES = 3


def _listing(call: Callable[[], list[BrokerOrder]]) -> list[BrokerOrder]:
    """A bulk listing, tried a few times: without it the pass cannot tell open from gone."""
    for attempt in range(1, LISTING_TRIES + 1):
        try:
            return call()
        except _UNREADABLE:
            if attempt == LISTING_TRIES:
                raise
    raise AssertionError("unreachable")


def _candidates(session: Session, cancelled_after: datetime) -> list[_Snapshot]:
    """Orders the brokerage may hold: sent, partly filled, pending with an attempt, and orders
    Arbiter itself cancelled lately (a fill may have raced the cancel)."""
    cancelled_by_us = select(OrderTransition.order_id).where(
        OrderTransition.order_id == Order.id,
        OrderTransition.to_state == S.CANCELLED.value,
        OrderTransition.cause.notin_([cause.value for cause in BROKERAGE_CAUSES]),
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
        return _live(broker)  # dead here but live there (a pending cancel is not news)
    return theirs is not state or snap.brokerage_order_id is None


def _live(broker: BrokerOrder) -> bool:
    """The brokerage may still fill it: open, and no cancel under way."""
    try:
        return not is_terminal(broker.state) and broker.status.lower() != "pending_cancel"
    except ArbiterError:
        return False


def _cancel_stray(
    database: Database, brokerage: Brokerage, snap: _Snapshot, broker: BrokerOrder, actor: str
) -> OrderChange | None:
    """An order final here (FAILED, CANCELLED, REJECTED...) but open at the brokerage: ask the
    brokerage to cancel it, book any fill it already has, and flag it for review (an
    ORDER_NEEDS_REVIEW event)."""
    try:
        brokerage.cancel(broker.brokerage_order_id)
        outcome = "cancel requested"
    except BrokerageRejected as exc:
        outcome = f"the brokerage refused the cancel: {exc}"
    except _UNREADABLE as exc:
        outcome = f"cancel failed, retried next pass: {exc}"
    with database.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        order = manager.lock(snap.id)
        if not is_terminal(OrderState(order.state)):
            return None
        result = settle(uow.session, order, broker, actor=actor)
        reason = (
            f"{order.state} here but {broker.status} at the brokerage "
            f"({broker.brokerage_order_id}): {outcome}"
        )
        manager.flag_for_review(order, reason, actor=actor)
        uow.commit()
        return OrderChange(
            order.id,
            order.client_order_id,
            order.ticker,
            order.state,
            order.state,
            result.filled,
            reason,
        )


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
            manager.transition(
                order, S.FAILED, reason=NEVER_RECEIVED, actor=actor, cause=C.RECONCILIATION
            )
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
        mismatch = UnknownOrderMismatch(
            reason=reason,
            client_order_id=coid,
            brokerage_order_id=broker.brokerage_order_id,
            symbol=broker.symbol,
            side=broker.side,
            quantity=broker.quantity,
            filled_quantity=broker.filled_quantity,
            status=broker.status,
        )
        details = mismatch.to_wire()
        del details["kind"], details["reason"]
        session.add(ReviewItem(kind="order", ticker=broker.symbol, reason=reason, details=details))
        emit(
            session,
            Event.of(
                EventType.RECONCILIATION_MISMATCH,
                mismatch,
                client_order_id=coid,
                ticker=broker.symbol,
            ),
        )
        uow.commit()
    return True
