"""`arbiter tokens`: API tokens for the web API and dashboard (read < trade < admin)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from arbiter.commands import common
from db import tokens as token_store
from db.strategies import require_strategy

app = typer.Typer(help="API tokens for `arbiter web`: create, list, revoke.", no_args_is_help=True)

COLUMNS = ("name", "scope", "strategy", "created_at", "last_used_at", "revoked_at")


class Scope(StrEnum):
    READ = "read"
    TRADE = "trade"
    ADMIN = "admin"


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="who or what holds it, e.g. grafana, alice")],
    scope: Annotated[Scope, typer.Option(help="read: look; trade: + send signals; admin: all")],
    strategy: Annotated[
        str | None, typer.Option(help="trade only: may send this strategy's signals only")
    ] = None,
    as_json: common.AsJson = False,
) -> None:
    """Create a token and print it once; only its hash is stored."""
    with common.unit_of_work() as uow:
        if strategy is not None:
            require_strategy(uow.session, strategy)
        new = token_store.create_token(uow.session, name, scope.value, strategy)
        uow.commit()
    if as_json:
        common.print_json({"name": new.name, "scope": new.scope, "token": new.token,
                           **({"strategy": new.strategy} if new.strategy else {})})  # fmt: skip
        return
    typer.echo(new.token)
    bound = f", strategy {new.strategy}" if new.strategy else ""
    typer.echo(f"token {new.name!r} ({new.scope}{bound}) created: it is shown only now, "
               "store it somewhere safe", err=True)  # fmt: skip


@app.command("list")
def list_(
    show_all: Annotated[bool, typer.Option("--all", help="include revoked tokens")] = False,
    as_json: common.AsJson = False,
) -> None:
    """Tokens by name and scope (never the tokens themselves)."""
    with common.unit_of_work() as uow:
        rows = [
            {"name": t.name, "scope": t.scope, "strategy": t.strategy, "created_at": t.created_at,
             "last_used_at": t.last_used_at, "revoked_at": t.revoked_at}
            for t in token_store.list_tokens(uow.session, include_revoked=show_all)
        ]  # fmt: skip
    common.show_rows(rows, as_json=as_json, columns=COLUMNS, empty="no tokens")


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="the token's name")]) -> None:
    """Revoke a token now; its dashboard sessions end with it."""
    with common.unit_of_work() as uow:
        token_store.revoke_token(uow.session, name)
        uow.commit()
    typer.echo(f"revoked token {name!r}")
