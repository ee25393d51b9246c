"""Intake: a signal becomes an order (SIGNAL_RECEIVED), or a malformed one is recorded REJECTED.

A repeated (strategy, signal_id) maps to the same row, so a redelivered message creates nothing.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from core.errors import InvalidSignal
from core.signals import Signal, client_order_id_for
from core.states import OrderState
from core.states import TransitionCause as C
from db.order_manager import OrderManager
from db.strategies import strategy_by_name

S = OrderState


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
            manager.transition(
                order,
                S.REJECTED,
                reason=f"malformed signal: {exc}",
                actor=actor,
                cause=C.SIGNAL_INTAKE,
            )
        return order.id

    strategy = strategy_by_name(session, signal.strategy)
    order, created = manager.create_from_signal(signal, strategy, actor=actor)
    if created and strategy is None:
        manager.transition(
            order,
            S.REJECTED,
            reason=f"unknown strategy {signal.strategy!r}",
            actor=actor,
            cause=C.SIGNAL_INTAKE,
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
    try:
        text = json.dumps(raw, default=str)
    except (TypeError, ValueError):
        text = json.dumps(repr(raw))
    return json.loads(text[:10_000]) if len(text) <= 10_000 else text[:10_000]
