"""Mount every operator command on the root `arbiter` app."""

from __future__ import annotations

import typer

from arbiter.commands import (
    conflicts,
    database,
    demo,
    events,
    kill_switch,
    notify,
    orders,
    ownership,
    positions,
    reconcile,
    report,
    review,
    strategies,
    stream,
    submit,
    tokens,
    up,
    web,
)
from brokersim import cli as brokersim_cli


def register(root: typer.Typer) -> None:
    root.add_typer(database.app, name="db")
    root.add_typer(strategies.app, name="strategies")
    root.command("up")(up.up)
    root.command("demo")(demo.demo)
    root.command("submit", context_settings=submit.CONTEXT_SETTINGS)(submit.submit)
    root.add_typer(orders.app, name="orders")
    root.add_typer(ownership.app, name="ownership")
    root.command("conflicts")(conflicts.conflicts)
    root.command("positions")(positions.positions)
    root.command("reconcile")(reconcile.reconcile)
    root.add_typer(kill_switch.app, name="kill-switch")
    root.add_typer(review.app, name="review")
    root.add_typer(notify.app, name="notify")
    root.command("report")(report.report)
    root.add_typer(tokens.app, name="tokens")
    root.command("web")(web.web)
    root.add_typer(events.app, name="events")
    root.add_typer(brokersim_cli.app, name="brokersim")
    root.command("stream")(stream.stream)
