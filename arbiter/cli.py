"""`arbiter`: one CLI for operators. Tables for people, `--json` for scripts."""

from __future__ import annotations

import typer

from arbiter.commands.registry import register

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
