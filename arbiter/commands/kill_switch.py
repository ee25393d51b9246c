"""`arbiter kill-switch on|off|status`: stop every new signal, held in Postgres."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from arbiter.commands import common
from core.errors import ArbiterError
from core.states import OrderState, TransitionCause, is_terminal
from db import kill_switch as kill_switch_store
from db.models import Order
from db.order_manager import OrderManager

app = typer.Typer(help="The kill switch: `on` rejects every new signal.", no_args_is_help=True)

ACTOR = "cli"
Reason = Annotated[str, typer.Option(help="why (recorded with the switch)")]


def cancel_received(session: Session, reason: str) -> int:
    """Cancel orders still in SIGNAL_RECEIVED (not yet validated). Each row is re-read under
    its lock, so an order a worker moved on meanwhile is left to the worker."""
    manager = OrderManager(session)
    ids = session.scalars(
        select(Order.id).where(Order.state == OrderState.SIGNAL_RECEIVED.value).order_by(Order.id)
    ).all()
    cancelled = 0
    for order_id in ids:
        order = manager.lock(order_id)
        if order.state == OrderState.SIGNAL_RECEIVED.value:
            manager.transition(
                order,
                OrderState.CANCELLED,
                reason=reason,
                actor=ACTOR,
                cause=TransitionCause.KILL_SWITCH,
            )
            cancelled += 1
    return cancelled


def open_at_brokerage(session: Session) -> list[str]:
    """Brokerage ids of the orders live there (sent or partly filled)."""
    states = [OrderState.ORDER_SENT.value, OrderState.PARTIAL_FILLED.value]
    return list(
        session.scalars(
            select(Order.brokerage_order_id).where(
                Order.state.in_(states), Order.brokerage_order_id.isnot(None)
            )
        )
    )


def maybe_at_brokerage(session: Session) -> list[str]:
    """client_order_ids of ORDER_PENDING orders with a submit attempt: their POST may have
    reached the brokerage (or still be on its way) without an answer recorded here."""
    return list(
        session.scalars(
            select(Order.client_order_id).where(
                Order.state == OrderState.ORDER_PENDING.value,
                Order.submit_attempts > 0,
                Order.brokerage_order_id.is_(None),
            )
        )
    )


def cancel_at_brokerage(
    brokerage_ids: list[str], client_order_ids: Sequence[str] = ()
) -> tuple[int, list[str]]:
    """Ask the brokerage to cancel each order (the pending ones looked up by client_order_id
    first); reconciliation records the outcome (a fill that beat the cancel is still
    booked). Returns (requested, failures)."""
    failures = []
    targets = list(brokerage_ids)
    with common.runtime() as rt:
        for coid in client_order_ids:
            try:
                found = rt.brokerage.get_by_client_order_id(coid)
            except ArbiterError as exc:
                failures.append(f"{coid}: {exc}")
                continue
            if found is not None and not is_terminal(found.state):
                targets.append(found.brokerage_order_id)
        for brokerage_id in targets:
            try:
                rt.brokerage.cancel(brokerage_id)
            except ArbiterError as exc:
                failures.append(f"{brokerage_id}: {exc}")
    return len(targets) - len(failures), failures


@app.command()
def on(
    reason: Reason = "operator request",
    cancel_open: Annotated[
        bool,
        typer.Option(
            "--cancel-open",
            help="also cancel orders not yet validated, and ask the brokerage to cancel live ones",
        ),
    ] = False,
) -> None:
    """Turn the kill switch on: every new signal is rejected."""
    with common.unit_of_work() as uow:
        kill_switch_store.set_kill_switch(uow.session, True, reason, ACTOR)
        cancelled = cancel_received(uow.session, f"kill switch: {reason}") if cancel_open else 0
        live = open_at_brokerage(uow.session)
        in_flight = maybe_at_brokerage(uow.session)
        uow.commit()
    typer.echo(f"kill switch ON ({reason}): new signals are rejected")
    if not cancel_open:
        if live:
            typer.echo(f"{len(live)} orders are live at the brokerage (--cancel-open cancels them)")
        return
    typer.echo(f"cancelled {cancelled} orders in SIGNAL_RECEIVED")
    # A pending order whose POST is in flight: found now, it is cancelled here; landing later,
    # the submit retry (kill switch on: look up, never POST) or reconciliation cancels it.
    requested, failures = cancel_at_brokerage(live, in_flight)
    typer.echo(f"asked the brokerage to cancel {requested} live orders; reconciliation records it")
    for failure in failures:
        typer.secho(f"could not cancel {failure}", fg="red", err=True)


@app.command()
def off(reason: Reason = "operator request") -> None:
    """Turn the kill switch off: signals are accepted again."""
    with common.unit_of_work() as uow:
        kill_switch_store.set_kill_switch(uow.session, False, reason, ACTOR)
        uow.commit()
    typer.echo(f"kill switch OFF ({reason})")


@app.command()
def status(as_json: common.AsJson = False) -> None:
    """Whether the kill switch is on, why, by whom and since when."""
    with common.unit_of_work() as uow:
        flag = kill_switch_store.kill_switch(uow.session)
    row: common.Row = {
        "on": bool(flag.get("on")),
        "reason": flag.get("reason"),
        "by": flag.get("by"),
        "at": flag.get("at"),
    }
    if as_json:
        common.print_json(row)
        return
    typer.echo(f"kill switch: {'ON' if row['on'] else 'off'}")
    if row["at"]:
        typer.echo(f"reason: {row['reason']}\nby: {row['by']}\nat: {row['at']}")
