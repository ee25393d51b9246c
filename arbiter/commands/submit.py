"""`arbiter submit`: send one signal down the pipeline, as a strategy process would."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select

from arbiter.commands import common
from core.brokerage import OrderType, TimeInForce
from core.signals import Signal
from core.states import OrderState, is_terminal
from db.models import Order
from strategy_client.client import SignalClient

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
    signal_id: Annotated[str | None, typer.Option(help="idempotency key (default: random)")] = None,
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
    with common.guarded():  # the shape check first: a bad signal never needs Redis
        Signal.parse({**fields, "signal_id": signal_id or "check-only"})
    broker = common.redis_url()
    if wait is not None:
        common.database_url()  # fail before enqueuing, not after
    client = SignalClient(broker)
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
    except BrokerError as exc:
        common.fail(f"cannot reach Redis: {exc}", code=1)
    finally:
        client.close()
    result: common.Row = {"client_order_id": coid}
    if wait is None:
        _report(result, as_json)
        return
    result.update(_wait_for(coid, wait))
    _report(result, as_json)
    if not result["final"]:
        raise typer.Exit(1)


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
    if "state" in result:
        state = result["state"] or "not yet recorded"
        suffix = "" if result["final"] else " (not final yet)"
        typer.echo(f"state: {state}{suffix}")
        if result["reason"]:
            typer.echo(f"reason: {result['reason']}")
