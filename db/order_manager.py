"""The OrderManager: the single writer of order state.

One call applies one transition: lock the order row, check the move against core's table, write
the state, one audit row and the transition's events into the outbox, all in the caller's
transaction. An invalid move raises before anything is written. It never commits.

Column changes are staged (db/order_writes.py) rather than left to the ORM's unit of work:
they reach the database before the transaction's next statement, or with the outbox's rows
in one statement at COMMIT.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, event, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, SessionTransaction, joinedload
from sqlalchemy.sql.dml import ReturningInsert

from core.errors import ArbiterError
from core.event_payloads import (
    EventPayload,
    OrderCancelRequested,
    OrderCorrected,
    OrderNeedsReview,
    OrderTransitioned,
)
from core.events import Event, EventType, transition_event_type
from core.signals import Signal
from core.states import OrderState, TransitionCause, check_correction, check_transition
from db.clock import db_now
from db.models import Order, ReviewItem, Strategy
from db.order_writes import stage
from db.outbox import emit, record

_LOCKED = "arbiter_locked_orders"

# Fields other than `state` that writers may change through the manager.
MUTABLE_FIELDS = frozenset(
    {
        "brokerage_order_id",
        "filled_quantity",
        "avg_fill_price",
        "reason",
        "conflict_check_passed",
        "conflict_reasoning",
        "submit_attempts",
        "last_submit_at",
        "protective",
        "cancel_requested_at",
        "cancel_requested_by",
    }
)


class OrderNotFound(ArbiterError):
    pass


def locked_orders(session: Session) -> list[Order]:
    """The orders this transaction holds locked (for log context, say)."""
    return list(_locked(session).values())


def _locked(session: Session) -> dict[int, Order]:
    """Order id -> the locked row. Held strongly: the session's identity map is weak, and a
    row it dropped would cost a SELECT to get back."""
    locked: dict[int, Order] = session.info.setdefault(_LOCKED, {})
    return locked


@event.listens_for(Session, "after_transaction_end")
def _forget_locks(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the database transaction ended: its row locks with it
        session.info.pop(_LOCKED, None)


def order_event(order: Order, event_type: EventType, payload: EventPayload) -> Event:
    """An event about `order`, with the envelope's order, strategy and ticker filled in."""
    return Event.of(
        event_type,
        payload,
        order_id=order.id,
        client_order_id=order.client_order_id,
        strategy=order.strategy_name,
        ticker=order.ticker,
    )


# The order row-locked, fresh from the database, with its strategy in the same round trip (the
# lock covers the order's row only). Built once: it runs at every step of every signal.
_LOCK = (
    select(Order)
    .options(joinedload(Order.strategy))
    .where(Order.id == bindparam("id"))
    .with_for_update(of=Order)
    .execution_options(populate_existing=True)
)


_LOCK_BY_CLIENT_ORDER_ID = (  # a trade update's look-up, as hot as the lock above
    select(Order)
    .options(joinedload(Order.strategy))
    .where(Order.client_order_id == bindparam("coid"))
    .with_for_update(of=Order)
    .execution_options(populate_existing=True)
)


@lru_cache(maxsize=32)
def _insert_statement(columns: frozenset[str]) -> ReturningInsert[Order]:
    """An order's INSERT for this set of columns, built once (a signal's is the same each time)."""
    return (
        insert(Order)
        .values({name: bindparam(name) for name in columns})
        .on_conflict_do_nothing()  # client_order_id or (strategy, signal_id) seen before
        .returning(Order)
    )


def audit_row(
    order: Order,
    source: OrderState,
    target: OrderState,
    reason: str | None,
    actor: str,
    cause: TransitionCause,
) -> dict[str, Any]:
    """One order_transitions row, as db.outbox.record writes it."""
    return {
        "order_id": order.id,
        "from_state": source.value,
        "to_state": target.value,
        "reason": reason,
        "actor": actor,
        "cause": cause.value,
    }


class OrderManager:
    def __init__(self, session: Session) -> None:
        self.session = session

    # -- reading with a lock -------------------------------------------------------------

    def lock(self, order_id: int) -> Order:
        """The order, row-locked until the caller's transaction ends."""
        locked = _locked(self.session)
        order = locked.get(order_id) or self.session.scalar(_LOCK, {"id": order_id})
        if order is None:
            raise OrderNotFound(f"order {order_id} does not exist")
        locked[order_id] = order
        return order

    def lock_by_client_order_id(self, client_order_id: str) -> Order | None:
        """The order with this client_order_id, row-locked (one statement), or None."""
        order = self.session.scalar(_LOCK_BY_CLIENT_ORDER_ID, {"coid": client_order_id})
        if order is not None:
            _locked(self.session)[order.id] = order
        return order

    def find_by_client_order_id(self, client_order_id: str) -> Order | None:
        return self.session.scalar(select(Order).where(Order.client_order_id == client_order_id))

    # -- creating --------------------------------------------------------------------------

    def create_from_signal(
        self, signal: Signal, strategy: Strategy | None, *, actor: str
    ) -> tuple[Order, bool]:
        """Persist a signal as an order (IDLE -> SIGNAL_RECEIVED). A repeated
        (strategy, signal_id) creates nothing and returns the existing order."""
        return self._insert_once(
            {
                "client_order_id": signal.client_order_id,
                "strategy_id": strategy.id if strategy else None,
                "strategy_name": signal.strategy,
                "signal_id": signal.signal_id,
                "ticker": signal.ticker,
                "side": signal.side.value,
                "quantity": signal.quantity,
                "order_type": signal.order_type.value,
                "limit_price": signal.limit_price,
                "time_in_force": signal.time_in_force.value,
                "stop_price": signal.stop_price,
                "trail_price": signal.trail_price,
                "trail_percent": signal.trail_percent,
                "order_class": signal.order_class.value,
                "order_metadata": {"signal": signal.to_message()},
            },
            actor=actor,
        )

    def create_derived(
        self, values: dict[str, Any], *, actor: str, reason: str, cause: TransitionCause
    ) -> tuple[Order, bool]:
        """An order that did not come from a signal of its own: a bracket's leg or a
        replacement (`values` names its parent or predecessor). It is recorded up to
        ORDER_PENDING through the table, so its audit trail is a valid path; the caller
        settles it with the brokerage's report. Idempotent by client_order_id."""
        order, created = self._insert_once(values, actor=actor)
        if created:
            for target in (OrderState.VALIDATING, OrderState.ORDER_PENDING):
                self.transition(order, target, reason=reason, actor=actor, cause=cause)
        return order, created

    def create_malformed(
        self,
        *,
        client_order_id: str,
        strategy_name: str,
        signal_id: str,
        raw: Any,
        error: str,
        actor: str,
    ) -> tuple[Order, bool]:
        """Record a signal that failed its shape check, so that it is seen and then REJECTED."""
        return self._insert_once(
            {
                "client_order_id": client_order_id,
                "strategy_name": strategy_name,
                "signal_id": signal_id,
                "order_metadata": {"raw_signal": raw, "error": error},
            },
            actor=actor,
        )

    def _insert_once(self, values: dict[str, Any], *, actor: str) -> tuple[Order, bool]:
        # Born SIGNAL_RECEIVED: the row goes in with the state its first move gives it, and
        # that move (IDLE -> SIGNAL_RECEIVED) is audited and announced as any other.
        source, target, reason = OrderState.IDLE, OrderState.SIGNAL_RECEIVED, "signal received"
        check_transition(source, target)
        values = {**values, "state": target.value, "reason": reason}
        order = self.session.scalar(_insert_statement(frozenset(values)), values)
        if order is None:
            existing = self.find_by_client_order_id(values["client_order_id"])
            if existing is None:  # same (strategy, signal_id) cannot have another coid
                raise OrderNotFound(f"no order for {values['client_order_id']}")
            return existing, False
        # Inserting it locked the row for this transaction: no SELECT ... FOR UPDATE needed.
        _locked(self.session)[order.id] = order
        self._record_move(
            order, source, target, reason=reason, actor=actor, cause=TransitionCause.SIGNAL_INTAKE
        )
        return order, True

    # -- changing ------------------------------------------------------------------------

    def transition(
        self,
        order: Order | int,
        target: OrderState,
        *,
        reason: str | None,
        actor: str,
        cause: TransitionCause,
        events: Sequence[Event] = (),
        **changes: Any,
    ) -> Order:
        """Move the order to `target`; raise InvalidTransition (writing nothing) otherwise."""
        order = self.lock(order if isinstance(order, int) else order.id)
        source = OrderState(order.state)
        check_transition(source, target)
        self._check(changes)
        changes["state"] = target.value
        if reason is not None:
            changes["reason"] = reason
        stage(self.session, order, changes)
        self._record_move(
            order, source, target, reason=reason, actor=actor, cause=cause, events=events
        )
        return order

    def _record_move(
        self,
        order: Order,
        source: OrderState,
        target: OrderState,
        *,
        reason: str | None,
        actor: str,
        cause: TransitionCause,
        events: Sequence[Event] = (),
    ) -> None:
        """The move's audit row, its announcing event (if it has one) and `events`."""
        event_type = transition_event_type(source, target)
        announced = (
            [
                order_event(
                    order,
                    event_type,
                    OrderTransitioned(
                        from_state=source,
                        to_state=target,
                        reason=reason,
                        filled_quantity=order.filled_quantity,
                        avg_fill_price=order.avg_fill_price,
                        cause=cause,
                    ),
                )
            ]
            if event_type is not None
            else []
        )
        record(
            self.session,
            [*announced, *events],
            audit_row(order, source, target, reason, actor, cause),
        )

    def request_cancel(self, order: Order | int, *, requested_by: str, actor: str) -> bool:
        """Record a cancel request on an order the brokerage holds (or may hold): the state
        stays until the brokerage confirms. Announced once (ORDER_CANCEL_REQUESTED); False
        when it was requested already."""
        order = self.lock(order if isinstance(order, int) else order.id)
        if order.cancel_requested_at is not None:
            return False
        stage(
            self.session,
            order,
            {"cancel_requested_at": db_now(self.session), "cancel_requested_by": requested_by},
        )
        emit(
            self.session,
            order_event(
                order,
                EventType.ORDER_CANCEL_REQUESTED,
                OrderCancelRequested(
                    state=OrderState(order.state),
                    requested_by=requested_by,
                    actor=actor,
                    filled_quantity=order.filled_quantity,
                ),
            ),
        )
        return True

    def correct(self, order: Order | int, target: OrderState, *, reason: str, actor: str) -> Order:
        """A human's audited correction of a final order to the brokerage's final word (see
        core.states.CORRECTIONS): an audit row and ORDER_CORRECTED, never a pipeline move."""
        order = self.lock(order if isinstance(order, int) else order.id)
        source = OrderState(order.state)
        check_correction(source, target)
        stage(self.session, order, {"state": target.value, "reason": f"correction: {reason}"})
        corrected = order_event(
            order,
            EventType.ORDER_CORRECTED,
            OrderCorrected(
                from_state=source,
                to_state=target,
                reason=reason,
                actor=actor,
                filled_quantity=order.filled_quantity,
            ),
        )
        audit = audit_row(
            order, source, target, f"correction: {reason}", actor, TransitionCause.CORRECTION
        )
        record(self.session, [corrected], audit)
        return order

    def update(self, order: Order | int, **changes: Any) -> Order:
        """Change non-state fields (attempt counters, brokerage ids) under the row lock."""
        order = self.lock(order if isinstance(order, int) else order.id)
        self._check(changes)
        stage(self.session, order, changes)
        return order

    def merge_metadata(self, order: Order, **entries: Any) -> None:
        order = self.lock(order.id)  # held already by every caller: no statement
        metadata = {**(order.order_metadata or {}), **entries}
        stage(self.session, order, {"order_metadata": metadata})

    def flag_for_review(self, order: Order | int, reason: str, *, actor: str) -> Order:
        """Mark the order for a human (ORDER_NEEDS_REVIEW); idempotent per reason."""
        order = self.lock(order if isinstance(order, int) else order.id)
        if order.needs_manual_review and order.reason == reason:
            return order
        stage(self.session, order, {"needs_manual_review": True, "reason": reason})
        self.session.add(
            ReviewItem(kind="order", order_id=order.id, ticker=order.ticker, reason=reason)
        )
        self.session.flush()
        emit(
            self.session,
            order_event(
                order, EventType.ORDER_NEEDS_REVIEW, OrderNeedsReview(reason=reason, actor=actor)
            ),
        )
        return order

    def resolve_review(
        self, order: Order | int, *, note: str, actor: str, target: OrderState | None = None
    ) -> Order:
        """Close the order's review entries, optionally moving it (audited) to `target`."""
        order = self.lock(order if isinstance(order, int) else order.id)
        if target is not None and target.value != order.state:
            self.transition(
                order,
                target,
                reason=f"manual review: {note}",
                actor=actor,
                cause=TransitionCause.OPERATOR,
            )
        stage(self.session, order, {"needs_manual_review": False})
        now = datetime.now(UTC)
        for item in self.session.scalars(
            select(ReviewItem).where(
                ReviewItem.order_id == order.id, ReviewItem.resolved_at.is_(None)
            )
        ):
            item.resolved_at = now
            item.resolution_note = note
        self.session.flush()
        return order

    def _check(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - MUTABLE_FIELDS
        if unknown:
            raise ValueError(f"OrderManager cannot change {sorted(unknown)}")
