"""Recovery: orders stalled before submission, stale ownership claims, and the start-up
recovery that runs once for the whole cluster when workers start."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select

from core.brokerage import Brokerage
from core.event_payloads import EventPayload, RecoveryCompleted, RecoveryStarted
from core.events import Event, EventType
from core.settings import Settings
from core.states import OrderState
from db.clock import db_now
from db.engine import Database
from db.models import (
    Order,
    TickerOwnership,
)
from db.order_manager import OrderManager
from db.outbox import emit
from db.ownership import lock_ticker, release_if_unused
from service_layer.reconciliation import reconcile_open_orders

log = logging.getLogger(__name__)
S = OrderState
RECOVERY_ACTOR = "arbiter.recover_stalled"
MAX_REDRIVES = 5  # a stalled order re-driven this often goes to a human instead
STALLED_BATCH = 500  # stalled orders handled per pass (the rest wait for the next)
NEXT_STEP: dict[OrderState, str] = {
    S.SIGNAL_RECEIVED: "validate",
    S.VALIDATING: "check_conflict",
    S.ORDER_PENDING: "submit",
}

# -- stalled orders --------------------------------------------------------------------------


@dataclass
class StalledReport:
    redrive: list[tuple[int, str]] = field(default_factory=list)
    flagged: int = 0


def find_stalled(database: Database, *, stalled_after_s: float) -> StalledReport:
    """Orders stuck before submission, each with the pipeline step to resume from (`redrive`:
    (order id, step); see NEXT_STEP, where the step `validate` is the task `arbiter.validate`).
    An order re-driven MAX_REDRIVES times, or stuck in IDLE, is flagged for review instead.
    Ages by the database's clock. An order flagged for review is a human's: never re-driven."""
    result = StalledReport()
    with database.unit_of_work() as uow:
        now = db_now(uow.session)
        cutoff = now - timedelta(seconds=stalled_after_s)
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
    _emit_system(database, EventType.RECOVERY_STARTED, RecoveryStarted(actor=actor))
    orders = reconcile_open_orders(
        database, brokerage, never_received_grace_s=settings.never_received_grace_s, actor=actor
    )
    stalled = find_stalled(database, stalled_after_s=settings.stalled_after_s)
    completed = RecoveryCompleted(
        recovered=orders.transitioned + orders.fills_applied + len(stalled.redrive),
        failed=orders.failed_never_received,
        for_review=orders.flagged + orders.orphans + stalled.flagged,
        orders=orders.counts(),
        redriven=len(stalled.redrive),
    )
    _emit_system(database, EventType.RECOVERY_COMPLETED, completed)
    counts: dict[str, Any] = completed.to_wire()
    counts["relayed"] = relay() if relay is not None else 0
    counts["redrive"] = [list(item) for item in stalled.redrive]
    return counts


def _emit_system(database: Database, event_type: EventType, payload: EventPayload) -> None:
    with database.unit_of_work() as uow:
        emit(uow.session, Event.of(event_type, payload))
        uow.commit()
