"""What every operator command shares: settings read fresh per invocation, the database in a
unit of work, errors turned into one red line and exit code 2, and rows as a table or JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import OperationalError as SqlOperationalError

from bootstrap import Runtime, bootstrap
from core.errors import ArbiterError, InvalidInput
from core.jsonable import jsonable, plain_decimal
from core.settings import Settings
from core.states import OrderState
from db.engine import Database, UnitOfWork

NO_DATABASE = "no database configured: run `arbiter up` (embedded) or set ARBITER_DATABASE_URL"
NO_REDIS = "no Redis configured: run `arbiter up` (embedded) or set ARBITER_REDIS_URL"
BAD_INPUT = 2  # exit code for anything the operator typed wrong or asked of a missing thing

Row = dict[str, Any]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
Limit = Annotated[int, typer.Option("--limit", min=1, help="show at most this many rows")]

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    """One red line on stderr and a non-zero exit; never a traceback."""
    err_console.print(Text(f"error: {safe(message)}", style="red"), soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def guarded() -> Iterator[None]:
    """Turn Arbiter's own errors (bad input, invalid moves) into `fail`."""
    try:
        yield
    except ArbiterError as exc:
        fail(str(exc))
    except SqlOperationalError as exc:
        fail(f"cannot reach the database: {exc.orig or exc}", code=1)


def settings(*, env_file_fallback: bool = True) -> Settings:
    """Read the environment now (not the lru-cached copy): a CLI run is one invocation.

    Variables absent from the environment are taken from `<data_dir>/env`, which a running
    `arbiter up` writes, so a second terminal needs no exports."""
    try:
        current = Settings()
        if not env_file_fallback:
            return current
        from arbiter.stack import data_dir_of, read_env_file

        missing = {key.removeprefix("ARBITER_").lower(): value
                   for key, value in read_env_file(data_dir_of(current)).items()
                   if key not in os.environ}  # fmt: skip
        return Settings.model_validate({**current.model_dump(), **missing}) if missing else current
    except ValidationError as exc:
        fail(f"invalid settings: {exc.errors()[0]['msg']}")


def database_url() -> str:
    url = settings().database_url
    if not url:
        fail(NO_DATABASE)
    return url


def redis_url() -> str:
    url = settings().redis_url
    if not url:
        fail(NO_REDIS)
    return url


@contextmanager
def runtime() -> Iterator[Runtime]:
    """This command's runtime (bootstrap.py), released when the command ends."""
    current = settings()
    if not current.database_url:
        fail(NO_DATABASE)
    built = bootstrap(current, application_name="arbiter-cli", pool_size=1)
    try:
        yield built
    finally:
        built.close()


@contextmanager
def open_database() -> Iterator[Database]:
    with runtime() as built:
        yield built.database


@contextmanager
def unit_of_work() -> Iterator[UnitOfWork]:
    """One transaction; the command calls `commit()` only once everything succeeded.
    Events go to the outbox, which the relay publishes."""
    with guarded(), open_database() as database, database.unit_of_work() as uow:
        yield uow


def parse_state(value: str) -> OrderState:
    try:
        return OrderState(value.strip().upper())
    except ValueError:
        valid = ", ".join(s.value for s in OrderState)
        raise InvalidInput(f"unknown state {value!r}; valid states: {valid}") from None


# -- output ----------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    typer.echo(json.dumps(jsonable(value), indent=2))


def safe(text: str) -> str:
    """Stored text made harmless for a terminal: every control character (escape sequences,
    carriage returns, bidi overrides) shown as a visible escape like \\x1b."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def plain(value: Any) -> Text:
    """A value as plain text for Rich: never read as markup ("[/x]" prints as typed)."""
    return Text(cell(value))


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, Mapping | list):
        return safe(json.dumps(jsonable(value)))
    return safe(str(value))


def table(
    rows: Sequence[Row], columns: Sequence[str] | None = None, title: str | None = None
) -> Table:
    columns = list(columns or (rows[0].keys() if rows else []))
    result = Table(title=plain(title) if title else None, title_justify="left")
    for column in columns:
        result.add_column(plain(column), overflow="fold")  # wrap, never cut a reason short
    for row in rows:
        result.add_row(*(plain(row.get(c)) for c in columns))
    return result


def show_rows(
    rows: Sequence[Row],
    *,
    as_json: bool,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    empty: str = "nothing to show",
) -> None:
    """A JSON list of objects (every key), or a table of `columns` for people."""
    if as_json:
        print_json(list(rows))
    elif not rows:
        console.print(plain(empty))
    else:
        console.print(table(rows, columns, title))


def show_object(row: Row, *, as_json: bool, title: str | None = None) -> None:
    if as_json:
        print_json(row)
        return
    result = Table(
        "field", "value", title=plain(title) if title else None, title_justify="left",
        show_header=False,
    )
    for key, value in row.items():
        result.add_row(plain(key), plain(value))
    console.print(result)
