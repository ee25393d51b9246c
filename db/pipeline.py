"""The pipeline's steps as services on one session: intake, validate, check_conflict, and the
bookkeeping around submission. Each step re-reads the order under its row lock and does
nothing if the order is already past the step, so a redelivered task is harmless."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from core.brokerage import OrderRequest, OrderType, Side, TimeInForce
from core.conflicts import ConflictDecision, Ownership, Resolution, StrategyView, decide
from core.errors import InvalidSignal
from core.events import Event, EventType
from core.risk import OrderFacts, RiskContext, RiskLimits, evaluate, first_failure
from core.signals import Signal, client_order_id_for
from core.states import OrderState
from db import repositories as repo
from db.models import ConflictLog, Order, Strategy, TickerOwnership
from db.order_manager import OrderManager, order_event
from db.ownership import claim, current_owner, lock_ticker, transfer
from db.positions import strategy_quantity
from db.settlement import release_unfilled_claim

S = OrderState


# -- intake ----------------------------------------------------------------------------------


def intake(session: Session, raw: Any, *, actor: str, message_id: str) -> int:
    """Persist a signal as an order (SIGNAL_RECEIVED), or record a malformed one REJECTED.
    A repeated (strategy, signal_id) returns the existing order and creates nothing."""
    manager = OrderManager(session)
    try:
        signal = Signal.parse(raw)
    except InvalidSignal as exc:
        strategy_name, signal_id = _identity_of(raw, message_id)
        order, created = manager.create_malformed(
            client_order_id=client_order_id_for(strategy_name, signal_id),
            strategy_name=strategy_name,
            signal_id=signal_id,
            raw=_json_safe(raw),
            error=str(exc),
            actor=actor,
        )
        if created:
            manager.transition(order, S.REJECTED, reason=f"malformed signal: {exc}", actor=actor)
        return order.id

    strategy = repo.strategy_by_name(session, signal.strategy)
    order, created = manager.create_from_signal(signal, strategy, actor=actor)
    if created and strategy is None:
        manager.transition(
            order, S.REJECTED, reason=f"unknown strategy {signal.strategy!r}", actor=actor
        )
    return order.id


def _identity_of(raw: Any, message_id: str) -> tuple[str, str]:
    """Best-effort key for a malformed signal, so that a redelivery maps to the same row."""
    strategy = raw.get("strategy") if isinstance(raw, dict) else None
    signal_id = raw.get("signal_id") if isinstance(raw, dict) else None
    strategy = strategy if isinstance(strategy, str) and 0 < len(strategy) <= 64 else "unknown"
    signal_id = (
        signal_id
        if isinstance(signal_id, str) and 0 < len(signal_id) <= 100
        else f"malformed-{message_id}"
    )
    return strategy, signal_id


def _json_safe(raw: Any) -> Any:
    import json

    try:
        text = json.dumps(raw, default=str)
    except (TypeError, ValueError):
        text = json.dumps(repr(raw))
    return json.loads(text[:10_000]) if len(text) <= 10_000 else text[:10_000]


# -- validate --------------------------------------------------------------------------------


def validate(session: Session, order_id: int, defaults: RiskLimits, *, actor: str) -> int:
    manager = OrderManager(session)
    order = manager.lock(order_id)
    if order.state != S.SIGNAL_RECEIVED.value:
        return order.id
    assert order.ticker is not None and order.quantity is not None
    strategy = session.get(Strategy, order.strategy_id) if order.strategy_id else None
    facts = OrderFacts(order.ticker, order.quantity, order.limit_price)
    world = repo.risk_snapshot(session, order)
    context = RiskContext(
        strategy_active=bool(strategy and strategy.active),
        kill_switch_on=world.kill_switch_on,
        open_orders=world.open_orders,
        signals_last_minute=world.signals_last_minute,
        reference_price=order.limit_price or world.last_price,
    )
    limits = defaults.overridden_by(strategy.config if strategy else {})
    verdicts = evaluate(facts, limits, context)
    manager.merge_metadata(
        order,
        validation=[{"rule": v.rule, "passed": v.passed} for v in verdicts],
        reference_price=str(context.reference_price) if context.reference_price else None,
    )
    failed = first_failure(verdicts)
    if failed is None:
        manager.transition(order, S.VALIDATING, reason="risk checks passed", actor=actor)
        return order.id
    extra = []
    if failed.limit_exceeded:
        extra.append(
            order_event(
                order, EventType.RISK_LIMIT_EXCEEDED, rule=failed.rule, reason=failed.reason
            )
        )
    manager.transition(
        order, S.REJECTED, reason=f"{failed.rule}: {failed.reason}", actor=actor, events=extra
    )
    return order.id


# -- check_conflict --------------------------------------------------------------------------


def check_conflict(session: Session, order_id: int, *, actor: str) -> int:
    """Ownership decision and claim, in one transaction under the ticker's lock."""
    manager = OrderManager(session)
    order = manager.lock(order_id)
    if order.state != S.VALIDATING.value:
        return order.id
    assert order.ticker is not None and order.side is not None and order.quantity is not None
    if repo.kill_switch_on(session):
        reason = "kill_switch: kill switch is on: no new orders accepted"
        manager.transition(order, S.REJECTED, reason=reason, actor=actor)
        return order.id
    lock_ticker(session, order.ticker)
    strategy = session.get(Strategy, order.strategy_id) if order.strategy_id else None
    owner_row = current_owner(session, order.ticker)
    decision = decide(
        _view(strategy) if strategy else None,
        order.strategy_name,
        order.ticker,
        Side(order.side),
        _ownership(session, owner_row, order) if owner_row else None,
        datetime.now(UTC),
    )
    events = _record_decision(session, order, strategy, owner_row, decision)

    def finish(target: OrderState, reason: str, *, passed: bool) -> int:
        manager.transition(
            order,
            target,
            reason=reason,
            actor=actor,
            events=events,
            conflict_check_passed=passed,
            conflict_reasoning=decision.reasoning,
        )
        return order.id

    if not decision.allowed:
        return finish(S.REJECTED, decision.reasoning, passed=False)
    assert strategy is not None
    shortfall = _long_only_shortfall(session, order, strategy, decision, owner_row)
    if shortfall:
        return finish(S.REJECTED, f"{decision.reasoning}; but {shortfall}", passed=True)
    if decision.resolution is Resolution.PRIORITY_OVERRIDE:
        assert owner_row is not None
        transfer(session, owner_row, strategy, order.id, reason=decision.reasoning)
    elif decision.claim:
        claim(session, order.ticker, strategy, order.id, reason=decision.reasoning)
    return finish(S.ORDER_PENDING, decision.reasoning, passed=True)


def _ownership(session: Session, owner_row: TickerOwnership, order: Order) -> Ownership:
    """The ticker's owner as the rules see it; for another strategy, with its live orders."""
    in_flight = (
        repo.live_order_count(session, owner_row.strategy_id, owner_row.ticker)
        if owner_row.strategy_id != order.strategy_id
        else 0
    )
    return Ownership(owner_row.ticker, _view(owner_row.strategy), owner_row.locked_until, in_flight)


def _record_decision(
    session: Session,
    order: Order,
    strategy: Strategy | None,
    owner_row: TickerOwnership | None,
    decision: ConflictDecision,
) -> list[Event]:
    """Log every decision on an owned ticker (the owner's own trades read "allowed"), and
    return the events announcing a real conflict (another strategy owns it)."""
    if owner_row is None or strategy is None:
        return []
    assert order.ticker is not None and order.side is not None
    session.add(
        ConflictLog(
            order_id=order.id,
            ticker=order.ticker,
            requesting_strategy_id=strategy.id,
            owning_strategy_id=owner_row.strategy_id,
            requesting_priority=strategy.priority,
            owning_priority=owner_row.strategy.priority,
            action=order.side,
            resolution=decision.resolution.value,
            reasoning=decision.reasoning,
        )
    )
    if not decision.conflict:
        return []
    conflict = {
        "requesting_strategy": strategy.name,
        "owning_strategy": owner_row.strategy.name,
        "requesting_priority": strategy.priority,
        "owning_priority": owner_row.strategy.priority,
        "action": order.side,
        "resolution": decision.resolution.value,
        "reasoning": decision.reasoning,
    }
    outcome = (
        EventType.ORDER_BLOCKED_BY_CONFLICT
        if decision.resolution is Resolution.BLOCKED
        else EventType.PRIORITY_OVERRIDE
    )
    return [
        order_event(order, EventType.CONFLICT_DETECTED, **conflict),
        order_event(order, outcome, **conflict),
        order_event(order, EventType.CONFLICT_RESOLVED, **conflict),
    ]


def _long_only_shortfall(
    session: Session,
    order: Order,
    strategy: Strategy,
    decision: ConflictDecision,
    owner_row: TickerOwnership | None,
) -> str | None:
    """Why a sell exceeds the shares the strategy holds (net of its other live sells), or
    None. After an override the previous owner's position counts: it moves with the ticker."""
    if order.side != Side.SELL.value:
        return None
    assert order.ticker is not None and order.quantity is not None
    held = strategy_quantity(session, strategy.id, order.ticker)
    if decision.resolution is Resolution.PRIORITY_OVERRIDE and owner_row is not None:
        held += strategy_quantity(session, owner_row.strategy_id, order.ticker)
    promised = repo.open_sell_quantity(session, strategy.id, order.ticker, exclude=order.id)
    if order.quantity <= held - promised:
        return None
    return (
        f"sell of {order.quantity} exceeds {strategy.name}'s position of {held} "
        f"(of which {promised} already on sale): long-only"
    )


def _view(strategy: Strategy) -> StrategyView:
    return StrategyView(strategy.name, strategy.priority, strategy.active)


# -- submission bookkeeping ------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitPlan:
    request: OrderRequest
    attempt: int


def begin_submit(session: Session, order_id: int) -> SubmitPlan | None:
    """Record a submit attempt before calling the brokerage (so reconciliation knows the
    brokerage may hold the order). None when the order is not ORDER_PENDING any more."""
    manager = OrderManager(session)
    order = manager.lock(order_id)
    if order.state != S.ORDER_PENDING.value:
        return None
    if order.submit_attempts == 0 and repo.kill_switch_on(session):
        manager.transition(
            order, S.CANCELLED, reason="kill switch is on: not sent", actor="arbiter.submit"
        )
        release_unfilled_claim(session, order)
        return None
    attempt = order.submit_attempts + 1
    manager.update(order, submit_attempts=attempt, last_submit_at=datetime.now(UTC))
    return SubmitPlan(request_for(order), attempt)


def request_for(order: Order) -> OrderRequest:
    assert order.ticker and order.side and order.quantity is not None
    return OrderRequest(
        client_order_id=order.client_order_id,
        symbol=order.ticker,
        side=Side(order.side),
        quantity=order.quantity,
        order_type=OrderType(order.order_type),
        limit_price=order.limit_price,
        time_in_force=TimeInForce(order.time_in_force),
    )
