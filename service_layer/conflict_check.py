"""The conflict check: the ownership decision of core/conflicts.py and the claim or transfer it
calls for, in one transaction under the ticker's lock (VALIDATING -> ORDER_PENDING, or REJECTED
with the reasoning). Every decision on an owned ticker is a conflict-log row."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.brokerage import STOP_TYPES, OrderType, Side
from core.conflicts import ConflictDecision, Ownership, Resolution, StrategyView, decide
from core.event_payloads import ConflictDecided
from core.events import Event, EventType
from core.states import OrderState
from core.states import TransitionCause as C
from db.clock import db_now
from db.kill_switch import kill_switch_on
from db.models import ConflictLog, Order, Strategy, TickerOwnership
from db.order_manager import OrderManager, order_event
from db.ownership import claim, current_owner, lock_ticker, transfer
from db.positions import strategy_quantity
from db.risk_counts import live_order_count, open_sell_quantity

S = OrderState


def check_conflict(session: Session, order_id: int, *, actor: str) -> int:
    """Ownership decision and claim, in one transaction under the ticker's lock."""
    manager = OrderManager(session)
    order = manager.lock(order_id)
    if order.state != S.VALIDATING.value or order.needs_manual_review:  # see validation
        return order.id
    assert order.ticker is not None and order.side is not None and order.quantity is not None
    if kill_switch_on(session):
        reason = "kill_switch: kill switch is on: no new orders accepted"
        manager.transition(order, S.REJECTED, reason=reason, actor=actor, cause=C.CONFLICT_CHECK)
        return order.id
    lock_ticker(session, order.ticker)
    strategy = order.strategy
    owner_row = current_owner(session, order.ticker)
    decision = decide(
        _view(strategy) if strategy else None,
        order.strategy_name,
        order.ticker,
        Side(order.side),
        _ownership(session, owner_row, order) if owner_row else None,
        db_now(session),  # lock expiry on the database's clock, never a worker's
    )
    events = _record_decision(session, order, strategy, owner_row, decision)

    def finish(target: OrderState, reason: str, *, passed: bool) -> int:
        manager.transition(
            order,
            target,
            reason=reason,
            actor=actor,
            cause=C.CONFLICT_CHECK,
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
    if _protects_own_position(session, order, strategy, owner_row):
        manager.update(order, protective=True)
    if decision.resolution is Resolution.PRIORITY_OVERRIDE:
        assert owner_row is not None
        transfer(session, owner_row, strategy, order.id, reason=decision.reasoning)
    elif decision.claim:
        claim(session, order.ticker, strategy, order.id, reason=decision.reasoning)
    return finish(S.ORDER_PENDING, decision.reasoning, passed=True)


def _ownership(session: Session, owner_row: TickerOwnership, order: Order) -> Ownership:
    """The ticker's owner as the rules see it; for another strategy, with its live orders."""
    in_flight = (
        live_order_count(session, owner_row.strategy_id, owner_row.ticker)
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
    conflict = ConflictDecided(
        ticker=order.ticker,
        requesting_strategy_id=strategy.id,
        requesting_strategy_name=strategy.name,
        requesting_priority=strategy.priority,
        owning_strategy_id=owner_row.strategy_id,
        owning_strategy_name=owner_row.strategy.name,
        owning_priority=owner_row.strategy.priority,
        action=Side(order.side),
        resolution=decision.resolution,
        reasoning=decision.reasoning,
    )
    # The log row holds what the events say, the strategies by id only.
    logged = conflict.model_dump(
        mode="json", exclude={"requesting_strategy_name", "owning_strategy_name"}
    )
    session.add(ConflictLog(order_id=order.id, **logged))
    if not decision.conflict:
        return []
    outcome = (
        EventType.ORDER_BLOCKED_BY_CONFLICT
        if decision.resolution is Resolution.BLOCKED
        else EventType.PRIORITY_OVERRIDE
    )
    return [
        order_event(order, EventType.CONFLICT_DETECTED, conflict),
        order_event(order, outcome, conflict),
        order_event(order, EventType.CONFLICT_RESOLVED, conflict),
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
    promised = open_sell_quantity(session, strategy.id, order.ticker, exclude=order.id)
    if order.quantity <= held - promised:
        return None
    return (
        f"sell of {order.quantity} exceeds {strategy.name}'s position of {held} "
        f"(of which {promised} already on sale): long-only"
    )


def _protects_own_position(
    session: Session, order: Order, strategy: Strategy, owner_row: TickerOwnership | None
) -> bool:
    """A stop sell by the owner on its own position: a protective stop-loss, whose fill
    releases the ownership lock (POSITION_STOP_LOSS_TRIGGERED)."""
    if order.side != Side.SELL.value or OrderType(order.order_type) not in STOP_TYPES:
        return False
    assert order.ticker is not None
    owner_ok = owner_row is None or owner_row.strategy_id == strategy.id
    return owner_ok and strategy_quantity(session, strategy.id, order.ticker) > 0


def _view(strategy: Strategy) -> StrategyView:
    return StrategyView(strategy.name, strategy.priority, strategy.active)
