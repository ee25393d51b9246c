"""bench/HISTORY.md: one line per bench run (date, commit, shape, headline figures), committed,
so a regression shows in review."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from bench.stack import REPO_ROOT

HISTORY = REPO_ROOT / "bench" / "HISTORY.md"
HEADER = """# Bench history

One line per `python bench/pipeline.py` run, appended by the bench (commit the line with the
change it measures). Load is the 1-minute load average at the start and end of the run: the
machine is shared, so compare runs at similar load.

| date (UTC) | commit | run | shape | ratio | Arbiter/s | ceiling/s | p99 ms @70% (ceiling) \
| pool CPU ms/signal | PG statements/signal | fill→filled p50 / p99 ms | load |
|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def line(result: dict[str, Any]) -> str:
    s = result["settings"]
    start = result.get("load_avg_1m_at_start", result["machine"]["load_avg_at_start"][0])
    load = f"{start:.1f}→{result['load_avg_at_end'][0]:.1f}"
    cells = [
        result["started_at"][:16].replace("T", " "),
        _commit(),
        ("quick" if s["quick"] else "full")
        + (f", profiled {s['profiled']}" if s["profiled"] else "")
        + (", ceiling with brokerage calls" if s.get("ceiling_brokerage") else ""),
        s["shape"],
        f"{result['ratio_order_sent']:.2f}",
        f"{result['order_sent_signals_per_s']}",
        f"{result['ceiling_signals_per_s']}",
        f"{result['order_sent_p99_ms_70']} ({result['ceiling_p99_ms_70']})",
        f"{result['pool_cpu_ms_per_signal']}",
        f"{result['pg_statements_per_signal']}",
        f"{result['fill_to_filled_p50_ms']} / {result['fill_to_filled_p99_ms']}",
        load,
    ]
    return "| " + " | ".join(cells) + " |\n"


def append(result: dict[str, Any], path: Path = HISTORY) -> Path:
    if not path.exists():
        path.write_text(HEADER)
    with path.open("a") as handle:
        handle.write(line(result))
    return path
