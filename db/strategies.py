"""Strategies: look-ups, creation, and (de)activation (which releases ownership locks)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.event_payloads import StrategyToggled, StrategyUpdated
from core.events import Event, EventType
from core.signals import STRATEGY_PATTERN, is_name
from core.strategies import Horizon
from core.strategy_config import StrategyConfig
from db.models import NEW_KEY, Strategy
from db.outbox import emit
from db.ownership import release_for_strategy


def strategy_by_name(session: Session, name: str) -> Strategy | None:
    return session.scalar(select(Strategy).where(Strategy.name == name))


def require_strategy(session: Session, name: str) -> Strategy:
    strategy = strategy_by_name(session, name)
    if strategy is None:
        raise InvalidInput(f"unknown strategy {name!r}")
    return strategy


def list_strategies(session: Session) -> list[Strategy]:
    return list(session.scalars(select(Strategy).order_by(Strategy.priority.desc(), Strategy.name)))


def add_strategy(
    session: Session,
    name: str,
    priority: int,
    horizon: str,
    display_name: str | None = None,
    config: dict[str, Any] | None = None,
) -> Strategy:
    if priority < 0 or priority > 1_000_000:
        raise InvalidInput(f"priority {priority}: use 0 to 1,000,000")
    if display_name is not None and not (
        0 < len(display_name) <= 128 and display_name.isprintable()
    ):
        raise InvalidInput("display name: 1 to 128 printable characters")
    if not is_name(STRATEGY_PATTERN, name):
        raise InvalidInput(f"strategy name {name!r}: use lowercase letters, digits and _")
    if horizon not in {h.value for h in Horizon}:
        raise InvalidInput(f"horizon {horizon!r}: use short, medium or long")
    if strategy_by_name(session, name) is not None:
        raise InvalidInput(f"strategy {name!r} already exists")
    strategy = Strategy(
        name=name,
        display_name=display_name or name.replace("_", " ").title(),
        priority=priority,
        horizon=horizon,
        config=StrategyConfig.parse(config or {}).stored(),
    )
    session.add(strategy)
    session.flush()
    return strategy


def set_config(session: Session, name: str, config: dict[str, Any]) -> Strategy:
    """Replace a strategy's configuration, validated (core/strategy_config.py) first."""
    strategy = require_strategy(session, name)
    strategy.config = StrategyConfig.parse(config).stored()
    session.flush()
    return strategy


def signing_key(session: Session, name: str, *, rotate: bool = False) -> str:
    """The strategy's signing key; `rotate` draws a new one (signals signed with the old key
    are refused from then on)."""
    strategy = require_strategy(session, name)
    if rotate:
        strategy.signing_key = session.scalar(select(text(NEW_KEY)))
        session.flush()
    return strategy.signing_key


def set_active(session: Session, name: str, active: bool, reason: str) -> Strategy:
    """(De)activate; deactivating releases the strategy's ownership locks."""
    strategy = require_strategy(session, name)
    if strategy.active == active:
        return strategy
    strategy.active = active
    released, kept = (
        ([], []) if active else release_for_strategy(session, strategy, f"{name} deactivated")
    )
    emit(
        session,
        Event.of(
            EventType.STRATEGY_ACTIVATED if active else EventType.STRATEGY_DEACTIVATED,
            StrategyToggled(reason=reason, released_tickers=released, unlocked_tickers=kept),
            strategy=name,
        ),
    )
    session.flush()
    return strategy


LIMIT_KEYS = ("max_order_quantity", "max_order_notional", "max_open_orders",
              "max_signals_per_minute")  # fmt: skip


def update_strategy(
    session: Session,
    name: str,
    *,
    actor: str,
    reason: str,
    priority: int | None = None,
    lock_days: float | None = None,
    limits: dict[str, Any] | None = None,
    display_name: str | None = None,
) -> Strategy:
    """Change priority, ownership lock length, per-strategy limits or display name, with a
    STRATEGY_UPDATED event recording each change as [old, new] (nothing if nothing changed).
    A new lock length applies to tickers acquired from now on."""
    strategy = require_strategy(session, name)
    config = dict(strategy.config or {})
    changes: dict[str, list[Any]] = {}
    if priority is not None and priority != strategy.priority:
        if priority < 0:
            raise InvalidInput(f"priority must be 0 or more, not {priority}")
        changes["priority"] = [strategy.priority, priority]
        strategy.priority = priority
    if lock_days is not None:
        if lock_days < 0:
            raise InvalidInput(f"lock_days must be 0 or more, not {lock_days}")
        days: float | int = int(lock_days) if float(lock_days).is_integer() else lock_days
        if days != config.get("ownership_lock_days", 0):
            changes["lock_days"] = [config.get("ownership_lock_days", 0), days]
            config["ownership_lock_days"] = days
    if limits is not None:
        unknown = set(limits) - set(LIMIT_KEYS)
        if unknown:
            raise InvalidInput(
                f"unknown limit {sorted(unknown)[0]!r}; known: {', '.join(LIMIT_KEYS)}"
            )
        merged = {k: v for k, v in {**config.get("limits", {}), **limits}.items() if v is not None}
        if merged != config.get("limits", {}):
            changes["limits"] = [config.get("limits", {}), merged]
            config["limits"] = merged
    if display_name is not None and display_name != strategy.display_name:
        changes["display_name"] = [strategy.display_name, display_name]
        strategy.display_name = display_name
    if not changes:
        return strategy
    strategy.config = StrategyConfig.parse(config).stored()
    emit(
        session,
        Event.of(EventType.STRATEGY_UPDATED,
                 StrategyUpdated(changes=changes, reason=reason, by=actor),
                 source=actor, strategy=name),
    )  # fmt: skip
    session.flush()
    return strategy


def announce_created(session: Session, strategy: Strategy, *, actor: str) -> None:
    """The STRATEGY_UPDATED event of a new strategy (every change is in the history)."""
    emit(
        session,
        Event.of(EventType.STRATEGY_UPDATED,
                 StrategyUpdated(created=True, priority=strategy.priority,
                                 horizon=strategy.horizon, config=strategy.config, by=actor),
                 source=actor, strategy=strategy.name),
    )  # fmt: skip


def signing_keys(session: Session) -> dict[str, str]:
    """Every strategy's signing key by name (for a process that runs several strategies:
    the demo, the chaos runner, tests)."""
    return dict(session.execute(select(Strategy.name, Strategy.signing_key)).tuples().all())
