"""Validation: the pre-trade risk rules of core/risk.py applied to one order
(SIGNAL_RECEIVED -> VALIDATING, or REJECTED with the first failed rule's reason)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from sqlalchemy.orm import Session

from core.event_payloads import RiskLimitExceeded
from core.events import EventType
from core.risk import OrderFacts, RiskContext, RiskLimits, evaluate, first_failure
from core.states import OrderState
from core.states import TransitionCause as C
from db.order_manager import OrderManager, order_event
from db.risk_counts import risk_snapshot

S = OrderState


PriceSource = Callable[[str], Decimal | None]


def validate(
    session: Session,
    order_id: int,
    defaults: RiskLimits,
    *,
    actor: str,
    reference_price: PriceSource = lambda _ticker: None,
) -> int:
    """`reference_price` is asked only for an order without a limit price (a market or stop
    order); a BrokerageUnavailable from it propagates (the task retries)."""
    manager = OrderManager(session)
    order = manager.lock(order_id)
    if order.state != S.SIGNAL_RECEIVED.value or order.needs_manual_review:
        # Moved on, or flagged for review: a human decides, no step executes it.
        return order.id
    assert order.ticker is not None and order.quantity is not None
    strategy = order.strategy
    facts = OrderFacts(order.ticker, order.quantity, order.limit_price, order.stop_price)
    world = risk_snapshot(session, order)
    market = reference_price(order.ticker) if order.limit_price is None else None
    context = RiskContext(
        strategy_active=bool(strategy and strategy.active),
        kill_switch_on=world.kill_switch_on,
        open_orders=world.open_orders,
        signals_last_minute=world.signals_last_minute,
        reference_price=market,
    )
    limits = defaults.overridden_by(strategy.config if strategy else {})
    verdicts = evaluate(facts, limits, context)
    manager.merge_metadata(
        order,
        validation=[{"rule": v.rule, "passed": v.passed} for v in verdicts],
        reference_price=str(market) if market is not None else None,
    )
    failed = first_failure(verdicts)
    if failed is None:
        manager.transition(
            order, S.VALIDATING, reason="risk checks passed", actor=actor, cause=C.VALIDATION
        )
        return order.id
    extra = []
    if failed.limit_exceeded:
        extra.append(
            order_event(
                order,
                EventType.RISK_LIMIT_EXCEEDED,
                RiskLimitExceeded(rule=failed.rule, reason=failed.reason),
            )
        )
    manager.transition(
        order,
        S.REJECTED,
        reason=f"{failed.rule}: {failed.reason}",
        actor=actor,
        cause=C.VALIDATION,
        events=extra,
    )
    return order.id
