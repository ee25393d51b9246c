"""`arbiter strategies`: list, add, re-prioritise, activate and deactivate strategies."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from sqlalchemy import select

from arbiter.commands import common
from core.errors import InvalidInput
from core.strategies import Horizon
from db import strategies as strategy_store
from db.models import Strategy, TickerOwnership

app = typer.Typer(help="Trading strategies and their priorities.", no_args_is_help=True)

LIMIT_KEYS = (
    "max_order_quantity",
    "max_order_notional",
    "max_open_orders",
    "max_signals_per_minute",
)
COLUMNS = ("name", "display_name", "priority", "horizon", "active", "lock_days", "limits")
Name = Annotated[str, typer.Argument(help="strategy name, e.g. long_term")]
Reason = Annotated[str, typer.Option(help="why (recorded on the event)")]


def strategy_row(strategy: Strategy) -> common.Row:
    return {
        "name": strategy.name,
        "display_name": strategy.display_name,
        "priority": strategy.priority,
        "horizon": strategy.horizon,
        "active": strategy.active,
        "lock_days": (strategy.config or {}).get("ownership_lock_days", 0),
        "limits": (strategy.config or {}).get("limits") or None,  # overrides of the defaults
        "config": strategy.config,
    }


def parse_limits(text: str) -> dict[str, Any]:
    """`--limits '{"max_order_quantity": 500}'`: a JSON object; its keys and values are
    checked with the rest of the config (core/strategy_config.py)."""
    try:
        limits = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--limits is not JSON: {exc.msg}") from None
    if not isinstance(limits, dict):
        raise InvalidInput("--limits must be a JSON object")
    unknown = [key for key in limits if key not in LIMIT_KEYS]
    if unknown:
        raise InvalidInput(
            f"--limits: unknown limit {unknown[0]!r}; known: {', '.join(LIMIT_KEYS)}"
        )
    return limits


@app.command("list")
def list_(as_json: common.AsJson = False) -> None:
    """Strategies by priority (highest wins a conflict)."""
    with common.unit_of_work() as uow:
        rows = [strategy_row(s) for s in strategy_store.list_strategies(uow.session)]
    common.show_rows(rows, as_json=as_json, columns=COLUMNS, empty="no strategies")


@app.command()
def add(
    name: Name,
    priority: Annotated[int, typer.Option(min=0, help="higher wins conflicts")],
    horizon: Annotated[Horizon, typer.Option(help="time horizon")],
    display_name: Annotated[str | None, typer.Option(help="name for people")] = None,
    lock_days: Annotated[
        float, typer.Option(min=0, help="ownership lock on acquiring a ticker, days")
    ] = 0,
    limits: Annotated[
        str | None, typer.Option(help='JSON, e.g. {"max_order_quantity": 500}')
    ] = None,
) -> None:
    """Add a strategy (active at once)."""
    config: dict[str, Any] = {"ownership_lock_days": lock_days}
    with common.unit_of_work() as uow:
        if limits is not None:
            config["limits"] = parse_limits(limits)
        strategy = strategy_store.add_strategy(
            uow.session, name, priority, horizon.value, display_name=display_name, config=config
        )
        uow.commit()
    typer.echo(f"added {strategy.name} (priority {strategy.priority}, {strategy.horizon})")


@app.command()
def key(
    name: Name,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="draw a new key; the old one stops working")
    ] = False,
) -> None:
    """Show (or rotate) the strategy's signing key: give it to the strategy process as
    ARBITER_STRATEGY_KEY_<NAME>."""
    with common.unit_of_work() as uow:
        secret = strategy_store.signing_key(uow.session, name, rotate=rotate)
        uow.commit()
    typer.echo(secret)


@app.command()
def priority(
    name: Name, value: Annotated[int, typer.Argument(min=0, help="the new priority")]
) -> None:
    """Change a strategy's priority."""
    with common.unit_of_work() as uow:
        old = strategy_store.require_strategy(uow.session, name).priority
        strategy_store.update_strategy(uow.session, name, actor="cli", reason="changed by "
                                       "operator (cli)", priority=value)  # fmt: skip
        uow.commit()
    typer.echo(f"{name}: priority {old} -> {value}")


@app.command()
def activate(name: Name, reason: Reason = "activated by operator") -> None:
    """Accept the strategy's signals again."""
    with common.unit_of_work() as uow:
        was_active = strategy_store.require_strategy(uow.session, name).active
        strategy_store.set_active(uow.session, name, True, reason)
        uow.commit()
    typer.echo(f"{name} was already active" if was_active else f"{name} activated")


@app.command()
def deactivate(name: Name, reason: Reason = "deactivated by operator") -> None:
    """Reject the strategy's new signals and release its ownership locks: tickers where it
    holds no position are released; where it holds shares it stays the (unlocked) owner until
    an active strategy trades the ticker and takes over ownership and position."""
    with common.unit_of_work() as uow:
        strategy = strategy_store.require_strategy(uow.session, name)
        was_active = strategy.active

        def owned() -> list[str]:
            return list(
                uow.session.scalars(
                    select(TickerOwnership.ticker)
                    .where(
                        TickerOwnership.strategy_id == strategy.id,
                        TickerOwnership.released_at.is_(None),
                    )
                    .order_by(TickerOwnership.ticker)
                )
            )

        before = owned()
        strategy_store.set_active(uow.session, name, False, reason)
        kept = owned()
        uow.commit()
    if not was_active:
        typer.echo(f"{name} was already inactive")
        return
    released = ", ".join(t for t in before if t not in kept) or "none"
    typer.echo(f"{name} deactivated; released tickers: {released}")
    if kept:
        typer.echo(f"still owned, unlocked (positions held): {', '.join(kept)}")
