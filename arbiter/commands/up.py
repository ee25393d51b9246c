"""`arbiter up`: the whole stack on this machine until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from arbiter.commands import common
from arbiter.stack import ENV_FILE, Stack, data_dir_of, masked
from arbiter.supervisor import ChildFailed, Shutdown, signals_ignored, sigterm_as_shutdown
from core.errors import OperationalError

console = common.console


def status_table(stack: Stack) -> Table:
    result = Table(title="Arbiter is up", title_justify="left")
    for column in ("process", "pid", "state", "where"):
        result.add_column(column, overflow="fold")
    for kind, url in (("postgres", stack.database_url), ("redis", stack.redis_url)):
        how = "embedded" if kind in stack.embedded else "configured"
        result.add_row(kind, "-", how, masked(url))
    if not stack.simulator_started:
        result.add_row("brokerage", "-", "external", stack.brokerage_url)
    for row in stack.supervisor.status_rows():
        result.add_row(row["process"], row["pid"], row["state"], row["where"])
    return result


def print_where(stack: Stack) -> None:
    console.print(status_table(stack))
    console.print(f"logs:        {stack.log_dir}/")
    if stack.flower_url:
        console.print(f"Flower:      {stack.flower_url}  (login in {stack.data_dir}/"
                      "flower-credentials, or ARBITER_FLOWER_USER/PASSWORD)")
    if stack.web_url:
        console.print(f"web:         {stack.web_url}  (API docs {stack.web_url}/docs; sign in with "
                      "a token from `arbiter tokens create NAME --scope admin`)")
    console.print(f"environment: {stack.data_dir / ENV_FILE} (the arbiter CLI reads it from this "
                  "folder); for other processes:")
    console.print(f"  {stack.export_line()}", soft_wrap=True, highlight=False)
    console.print("try, in another terminal:  arbiter submit trading AAPL buy 10  |  "
                  "arbiter orders  |  arbiter conflicts  |  arbiter events tail")
    console.print("[bold]Ctrl-C stops everything.[/bold]")


def up(
    flower: Annotated[bool, typer.Option("--flower/--no-flower", help="start Flower")] = True,
    web: Annotated[
        bool, typer.Option("--web/--no-web", help="start the web API and dashboard")
    ] = True,
) -> None:
    """Start Postgres and Redis (embedded unless ARBITER_DATABASE_URL / ARBITER_REDIS_URL are
    set), migrate and seed, then the brokerage simulator, a worker, beat, Flower and the web
    API (`arbiter web`, its URL in ARBITER_WEB_URL); watch them
    until Ctrl-C, then stop everything this run started."""
    current = common.settings(env_file_fallback=False)
    data_dir = data_dir_of(current)
    stack = Stack(current, data_dir, say=lambda m: console.print(m, highlight=False))
    code = 0
    with sigterm_as_shutdown():
        try:
            stack.start(flower=flower, web=web)
            print_where(stack)
            while True:
                for message in stack.check():
                    console.print(f"[yellow]{message}[/yellow]")
                time.sleep(1)
        except (KeyboardInterrupt, Shutdown):
            console.print("stopping ...")
        except (ChildFailed, OperationalError) as exc:
            common.err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            code = 1
        finally:
            with signals_ignored():
                stack.stop()
    console.print("stopped" if code == 0 else "stopped after an error")
    raise typer.Exit(code)
