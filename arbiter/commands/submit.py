"""`arbiter submit`: send one signal down the pipeline, as a strategy process would."""

from __future__ import annotations

import os
import time
import uuid
from typing import Annotated
from urllib.parse import urlsplit

import typer
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy import select

from arbiter.commands import common
from core.brokerage import OrderType, TimeInForce
from core.signals import Signal
from core.states import OrderState, is_terminal
from db.models import Order
from db.strategies import strategy_by_name
from strategy_client.client import KEY_VARIABLE, SignalClient

POLL_INTERVAL_S = 0.25
# Register with these, so that a negative quantity ("-5") reaches the signal check as a
# value instead of being mistaken for an option.
CONTEXT_SETTINGS = {"ignore_unknown_options": True}


def submit(
    strategy: Annotated[str, typer.Argument(help="strategy name, e.g. long_term")],
    ticker: Annotated[str, typer.Argument(help="e.g. AAPL")],
    side: Annotated[str, typer.Argument(help="buy or sell")],
    # A string on purpose: the signal's own check names a malformed quantity.
    quantity: Annotated[str, typer.Argument(help="shares (fractions allowed)")],
    signal_id: Annotated[
        str | None,
        typer.Option(help="idempotency key; one is made (and printed) when not given"),
    ] = None,
    order_type: Annotated[OrderType, typer.Option("--type", help="order type")] = OrderType.MARKET,
    limit_price: Annotated[str | None, typer.Option(help="required for --type limit")] = None,
    tif: Annotated[TimeInForce, typer.Option(help="time in force")] = TimeInForce.DAY,
    wait: Annotated[
        float | None, typer.Option(min=0, help="wait up to SECONDS for a final state")
    ] = None,
    as_json: common.AsJson = False,
) -> None:
    """Enqueue a signal and print its client_order_id; --wait follows it to a final state.

    With --wait the exit code is 1 when the order is not final within the time."""
    fields = {
        "strategy": strategy,
        "ticker": ticker,
        "side": side,
        "quantity": quantity,
        "order_type": order_type.value,
        "limit_price": limit_price,
        "time_in_force": tif.value,
    }
    # Made once and printed: sending the same signal again with it creates nothing new.
    signal_id = signal_id or f"cli-{uuid.uuid4().hex}"
    with common.guarded():  # the shape check first: a bad signal never needs Redis
        Signal.parse({**fields, "signal_id": signal_id})
    broker = common.redis_url()
    if wait is not None:
        common.database_url()  # fail before enqueuing, not after
    client = SignalClient(broker, keys=_key_of)
    try:
        with common.guarded():
            coid = client.submit_signal(
                strategy,
                ticker,
                side,
                quantity,
                signal_id=signal_id,
                order_type=order_type.value,
                limit_price=limit_price,
                time_in_force=tif.value,
            )
    except (BrokerError, RedisError) as exc:
        common.fail(f"cannot reach Redis at {_where(broker)}: {_first_line(exc)}", code=1)
    finally:
        client.close()
    result: common.Row = {"client_order_id": coid, "signal_id": signal_id}
    if wait is None:
        _report(result, as_json)
        return
    result.update(_wait_for(coid, wait))
    _report(result, as_json)
    if not result["final"]:
        raise typer.Exit(1)


def _key_of(strategy: str) -> str | None:
    """The strategy's signing key: ARBITER_STRATEGY_KEY_<NAME> (the client reads it), else
    from the database when one is configured (the operator may act as any strategy)."""
    if os.environ.get(KEY_VARIABLE.format(strategy.upper())) or not common.settings().database_url:
        return None
    with common.unit_of_work() as uow:
        found = strategy_by_name(uow.session, strategy)
        return found.signing_key if found is not None else None


def _where(url: str) -> str:
    """host:port of a Redis URL, without any password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _wait_for(coid: str, seconds: float) -> common.Row:
    deadline = time.monotonic() + seconds
    state: str | None = None
    reason: str | None = None
    with common.guarded(), common.open_database() as database:
        while True:
            with database.unit_of_work() as uow:
                order = uow.session.scalar(select(Order).where(Order.client_order_id == coid))
                if order is not None:
                    state, reason = order.state, order.reason
            if state is not None and is_terminal(OrderState(state)):
                return {"state": state, "reason": reason, "final": True}
            if time.monotonic() >= deadline:
                return {"state": state, "reason": reason, "final": False}
            time.sleep(POLL_INTERVAL_S)


def _report(result: common.Row, as_json: bool) -> None:
    if as_json:
        common.print_json(result)
        return
    typer.echo(result["client_order_id"])
    typer.echo(f"signal_id: {result['signal_id']}")
    if "state" in result:
        state = result["state"] or "not yet recorded"
        suffix = "" if result["final"] else " (not final yet)"
        typer.echo(f"state: {state}{suffix}")
        if result["reason"]:
            typer.echo(f"reason: {result['reason']}")
