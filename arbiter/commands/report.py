"""`arbiter report`: the conflict analysis report for a period, as Markdown, HTML or JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from arbiter.commands import common
from arbiter.report_render import to_html, to_markdown
from core.errors import InvalidInput
from service_layer.reports import build_report

FORMATS = ("md", "html", "json")
_PERIOD = re.compile(r"(\d+(?:\.\d+)?)([hdw])")
_DAYS = {"h": 1 / 24, "d": 1.0, "w": 7.0}


def parse_period(value: str) -> float:
    """`7d`, `12h`, `2w` -> days."""
    match = _PERIOD.fullmatch(value.strip().lower())
    if not match or float(match.group(1)) <= 0 or float(match.group(1)) > 100_000:
        raise InvalidInput(f"--since {value!r}: use a period such as 12h, 7d or 4w")
    return float(match.group(1)) * _DAYS[match.group(2)]


def report(
    since: Annotated[str, typer.Option(help="the period covered, e.g. 12h, 7d, 4w")] = "7d",
    fmt: Annotated[str, typer.Option("--format", help="md, html or json")] = "md",
    out: Annotated[Path | None, typer.Option(help="write to this file (default: stdout)")] = None,
) -> None:
    """Conflicts by resolution per strategy, contested tickers, overrides and the positions
    they moved, blocked signals, orders, fills and P&L per strategy."""
    with common.guarded():
        days = parse_period(since)
        if fmt not in FORMATS:
            raise InvalidInput(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    with common.guarded(), common.open_database() as database:
        data = build_report(database, since_days=days)
    if fmt == "json":
        text = json.dumps(data, indent=2)
    elif fmt == "html":
        text = to_html(data)
    else:
        text = to_markdown(data)
    if out is None:
        typer.echo(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        common.fail(f"cannot write {out}: {exc.strerror}")
    common.err_console.print(f"report written to {out}")
