"""`arbiter db`: migrate the schema and seed the default strategies."""

from __future__ import annotations

from typing import Annotated

import typer
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from arbiter.commands import common
from db.migrate import downgrade as migrate_down
from db.migrate import upgrade as migrate_up
from db.models import Strategy
from db.seed import seed_default_strategies

app = typer.Typer(help="Schema migrations and seeding.", no_args_is_help=True)


def current_revision() -> str | None:
    with common.guarded(), common.open_database() as database, database.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Apply migrations up to REVISION (head) and seed missing default strategies.
    Safe to run again: it changes only what is missing."""
    url = common.database_url()
    before = current_revision()
    with common.guarded():
        migrate_up(url, revision)
    after = current_revision()
    if before == after:
        typer.echo(f"schema already at {after}")
    else:
        typer.echo(f"schema upgraded: {before or 'empty'} -> {after}")
    with common.unit_of_work() as uow:
        before_names = set(uow.session.scalars(select(Strategy.name)))
        seed_default_strategies(uow.session)
        added = sorted(set(uow.session.scalars(select(Strategy.name))) - before_names)
        uow.commit()
    # Counted here: the seed's rowcount is not reliable across drivers.
    typer.echo(f"seeded {', '.join(added)}" if added else "default strategies present")


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="target revision ('base' drops all)")] = "-1",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Revert migrations to REVISION (default: one step back). Drops data."""
    url = common.database_url()
    before = current_revision()
    if before is None:
        common.fail("the database has no schema to downgrade")
    if not yes:
        typer.confirm(
            f"Downgrade the schema from {before} to {revision}? Tables and their rows are dropped",
            abort=True,
        )
    with common.guarded():
        migrate_down(url, revision)
    typer.echo(f"schema downgraded: {before} -> {current_revision() or 'empty'}")
