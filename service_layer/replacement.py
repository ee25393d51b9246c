"""Replacing one open order (quantity, limit price, stop price) through the brokerage's replace
(Alpaca's PATCH /v2/orders/{id}), SPEC §9.

The replacement is an order row of its own, linked to the one it replaces (`replaces_order_id`),
with a client_order_id derived like any other (so a retried replace maps to the same row). It is
written ORDER_PENDING with a submit attempt *before* the brokerage is asked, so that a crash or a
timeout leaves an order reconciliation settles, never an orphan. A larger quantity is checked
again by the pre-trade risk rules; a refusal leaves the original untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.brokerage import (
    NEEDS_LIMIT_PRICE,
    NEEDS_STOP_PRICE,
    Brokerage,
    OrderType,
    ReplaceRequest,
)
from core.errors import BrokerageRejected, BrokerageUnavailable, InvalidInput, OrderNotOpen
from core.event_payloads import OrderReplaced
from core.events import EventType
from core.risk import OrderFacts, RiskContext, RiskLimits, evaluate, first_failure
from core.signals import client_order_id_for
from core.states import OrderState, TransitionCause
from db.clock import db_now
from db.engine import Database
from db.models import Order, Strategy
from db.order_manager import OrderManager, order_event
from db.outbox import emit
from service_layer.cancellation import find_order
from service_layer.settlement import settle

S = OrderState
ACTOR = "arbiter.replace"
REPLACEABLE = (S.ORDER_SENT.value, S.PARTIAL_FILLED.value)


@dataclass(frozen=True)
class ReplaceChanges:
    quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.quantity, self.limit_price, self.stop_price))


@dataclass(frozen=True)
class ReplaceResult:
    original_id: int
    replacement_id: int
    client_order_id: str
    state: str
    message: str


class ReplaceRefused(InvalidInput):
    """The replace breaks a pre-trade risk rule, or the brokerage refused it."""


def replace_order(
    database: Database,
    brokerage: Brokerage,
    order_ref: int | str,
    changes: ReplaceChanges,
    *,
    requested_by: str,
    limits: RiskLimits,
    reference_price: Callable[[str], Decimal | None] = lambda _t: None,
    strategy: str | None = None,
) -> ReplaceResult:
    """Replace one open order; see the module docstring. `strategy`, when given, must own
    the order (a strategy replaces only its own)."""
    with database.unit_of_work() as uow:
        original = find_order(uow.session, order_ref)
        replacement, brokerage_id, request = _begin(
            uow.session, original.id, changes, requested_by, limits, reference_price, strategy
        )
        uow.commit()
    try:
        report = brokerage.replace(brokerage_id, request)
    except BrokerageRejected as exc:
        with database.unit_of_work() as uow:
            manager = OrderManager(uow.session)
            order = manager.transition(
                replacement,
                S.REJECTED,
                reason=f"brokerage refused the replace: {exc}",
                actor=ACTOR,
                cause=TransitionCause.BROKERAGE_REPORT,
            )
            uow.commit()
            raise ReplaceRefused(
                f"brokerage refused to replace order {original.id}: {exc}"
            ) from exc
    except BrokerageUnavailable:
        # Outcome unknown: reconciliation finds the replacement (or fails it after the grace).
        return ReplaceResult(
            original.id,
            replacement,
            request.client_order_id,
            S.ORDER_PENDING.value,
            "replace sent, answer lost: reconciliation settles it",
        )
    with database.unit_of_work() as uow:
        order = OrderManager(uow.session).lock(replacement)
        settle(uow.session, order, report, actor=ACTOR)
        uow.commit()
        state = order.state
    _settle_original(database, brokerage, original.id, brokerage_id)
    return ReplaceResult(
        original.id, replacement, request.client_order_id, state, "replaced at the brokerage"
    )


def _begin(
    session: Session,
    order_id: int,
    changes: ReplaceChanges,
    requested_by: str,
    limits: RiskLimits,
    reference_price: Callable[[str], Decimal | None],
    strategy: str | None,
) -> tuple[int, str, ReplaceRequest]:
    manager = OrderManager(session)
    original = manager.lock(order_id)
    ref = f"{original.id} ({original.client_order_id})"
    if strategy is not None and original.strategy_name != strategy:
        raise InvalidInput(f"order {ref} is not {strategy}'s")
    if original.state not in REPLACEABLE:
        raise OrderNotOpen(ref, original.state, action="replace")
    _check_changes(original, changes)
    if original.cancel_requested_at is not None:
        raise InvalidInput(f"order {ref} has a cancel pending: it cannot be replaced")
    if original.brokerage_order_id is None:
        raise InvalidInput(f"order {ref} has no brokerage order id yet")
    assert original.quantity is not None and original.ticker is not None
    quantity = changes.quantity or original.quantity
    if quantity <= original.filled_quantity:
        raise InvalidInput(
            f"quantity {quantity} is not above the {original.filled_quantity} filled"
        )
    limit_price = changes.limit_price or original.limit_price
    stop_price = changes.stop_price or original.stop_price
    if quantity > original.quantity:
        _recheck_risk(session, original, quantity, limit_price, stop_price, limits, reference_price)

    root = (original.order_metadata or {}).get("root_signal_id") or original.signal_id
    number = _replacements_so_far(session, original) + 1
    signal_id = f"{root}~r{number}"[-128:]
    coid = client_order_id_for(original.strategy_name, signal_id)
    replacement, _ = manager.create_derived(
        {
            "client_order_id": coid,
            "strategy_id": original.strategy_id,
            "strategy_name": original.strategy_name,
            "signal_id": signal_id,
            "ticker": original.ticker,
            "side": original.side,
            "quantity": quantity,
            "order_type": original.order_type,
            "limit_price": limit_price,
            "stop_price": stop_price,
            "trail_price": original.trail_price,
            "trail_percent": original.trail_percent,
            "time_in_force": original.time_in_force,
            "order_class": original.order_class,
            "parent_order_id": original.parent_order_id,
            "leg_role": original.leg_role,
            "replaces_order_id": original.id,
            "protective": original.protective,
            "conflict_check_passed": original.conflict_check_passed,
            "conflict_reasoning": original.conflict_reasoning,
            "order_metadata": {
                "root_signal_id": root,
                "replaces": original.client_order_id,
                "requested_by": requested_by,
                "signal": (original.order_metadata or {}).get("signal"),
            },
        },
        actor=ACTOR,
        reason=f"replacement of order {original.id} requested by {requested_by}",
        cause=TransitionCause.REPLACEMENT,
    )
    manager.update(replacement, submit_attempts=1, last_submit_at=db_now(session))
    emit(
        session,
        order_event(
            original,
            EventType.ORDER_REPLACED,
            OrderReplaced(
                replacement_order_id=replacement.id,
                replacement_client_order_id=coid,
                requested_by=requested_by,
                quantity=quantity,
                limit_price=limit_price,
                stop_price=stop_price,
            ),
        ),
    )
    request = ReplaceRequest(
        client_order_id=coid,
        quantity=changes.quantity,
        limit_price=changes.limit_price,
        stop_price=changes.stop_price,
    )
    return replacement.id, original.brokerage_order_id, request


def _check_changes(order: Order, changes: ReplaceChanges) -> None:
    if not changes.any():
        raise InvalidInput("nothing to replace: give a quantity, a limit price or a stop price")
    kind = OrderType(order.order_type)
    if changes.limit_price is not None and kind not in NEEDS_LIMIT_PRICE:
        raise InvalidInput(f"a {kind.value} order has no limit price to replace")
    if changes.stop_price is not None and kind not in NEEDS_STOP_PRICE:
        raise InvalidInput(f"a {kind.value} order has no stop price to replace")
    for name in ("quantity", "limit_price", "stop_price"):
        value = getattr(changes, name)
        if value is not None and (not value.is_finite() or value <= 0):
            raise InvalidInput(f"{name} must be a positive number, got {value}")


def _recheck_risk(
    session: Session,
    order: Order,
    quantity: Decimal,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    limits: RiskLimits,
    reference_price: Callable[[str], Decimal | None],
) -> None:
    """A larger quantity passes the size and notional rules again (the others held)."""
    assert order.ticker is not None
    strategy = session.get(Strategy, order.strategy_id) if order.strategy_id else None
    market = reference_price(order.ticker) if limit_price is None else None
    verdicts = evaluate(
        OrderFacts(order.ticker, quantity, limit_price, stop_price),
        limits.overridden_by(strategy.config if strategy else {}),
        RiskContext(
            strategy_active=bool(strategy and strategy.active),
            kill_switch_on=False,
            open_orders=0,
            signals_last_minute=0,
            reference_price=market,
        ),
    )
    failed = first_failure(verdicts)
    if failed is not None:
        raise ReplaceRefused(f"replace of order {order.id} refused: {failed.rule}: {failed.reason}")


def _replacements_so_far(session: Session, order: Order) -> int:
    root = (order.order_metadata or {}).get("root_signal_id") or order.signal_id
    return (
        session.scalar(
            select(func.count())
            .select_from(Order)
            .where(
                Order.strategy_name == order.strategy_name,
                Order.order_metadata["root_signal_id"].astext == root,
            )
        )
        or 0
    )


def _settle_original(
    database: Database, brokerage: Brokerage, order_id: int, brokerage_id: str
) -> None:
    """The replaced order ends at the brokerage (`replaced`): settle it now rather than on the
    next reconciliation pass (which does it anyway if this lookup fails)."""
    try:
        report = brokerage.get(brokerage_id)
    except (BrokerageUnavailable, BrokerageRejected):
        return
    with database.unit_of_work() as uow:
        order = OrderManager(uow.session).lock(order_id)
        settle(uow.session, order, report, actor=ACTOR)
        uow.commit()
