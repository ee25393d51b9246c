"""Worker memory across a chaos run: the resident set size of every worker process (main and
pool children), sampled in a thread, and the slope of it against the signals handled so far
(orders recorded: the work done, which goes on after the last send).

A fault restarts workers, which resets their memory; so besides the slope of the total (all
workers, all processes) the report gives the slope per worker process over its own lifetime,
for the longest-lived ones: a leak shows there as a steady climb however often others restart.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024


@dataclass
class RssSample:
    at_s: float
    handled: int
    rss: dict[int, int]  # pid -> bytes, every process of every worker


@dataclass
class RssSampler:
    """`pids()` lists the worker processes now; `handled()` the signals handled so far."""

    pids: Callable[[], list[int]]
    handled: Callable[[], int]
    every_s: float = 5.0
    log_path: Path | None = None  # each sample appended as a JSON line (read during a long run)
    samples: list[RssSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def sample(self) -> None:
        rss: dict[int, int] = {}
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                value = psutil.Process(pid).memory_info().rss
                if value:  # 0: a zombie (a killed pool child not yet reaped), not a process
                    rss[pid] = value
        handled = self.samples[-1].handled if self.samples else 0
        with contextlib.suppress(Exception):  # the database may be away (a fault): keep the last
            handled = self.handled()
        sample = RssSample(round(time.monotonic() - self._t0, 1), handled, rss)
        self.samples.append(sample)
        if self.log_path is not None:
            with self.log_path.open("a") as log:
                log.write(json.dumps({"at_s": sample.at_s, "handled": handled,
                                      "total_mb": round(sum(rss.values()) / MB, 1),
                                      "rss_mb": {p: round(v / MB, 1) for p, v in rss.items()}})
                          + "\n")

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def summary(self) -> dict[str, Any]:
        """Totals, the slope of the total, and per-process slopes (MB per 1000 signals)."""
        usable = [s for s in self.samples if s.rss]
        if len(usable) < 2:
            return {"samples": len(usable)}
        totals = [(s.handled, sum(s.rss.values()) / MB) for s in usable]
        per_pid: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for s in usable:
            for pid, value in s.rss.items():
                per_pid[pid].append((s.handled, value / MB))
        lived = sorted(per_pid.items(), key=lambda kv: len(kv[1]), reverse=True)
        longest = [
            {"pid": pid, "samples": len(points), "first_mb": round(points[0][1], 1),
             "last_mb": round(points[-1][1], 1),
             "signals_spanned": points[-1][0] - points[0][0],
             "mb_per_1000_signals": _slope(points)}
            for pid, points in lived[:6] if len(points) >= 3
        ]
        return {
            "samples": len(usable),
            "total_first_mb": round(totals[0][1], 1),
            "total_last_mb": round(totals[-1][1], 1),
            "total_max_mb": round(max(v for _, v in totals), 1),
            "total_mb_per_1000_signals": _slope(totals),
            # Without the warm-up (imports, connection pools, SQLAlchemy's caches filling).
            "second_half_mb_per_1000_signals": _slope(totals[len(totals) // 2:]),
            "signals_handled": totals[-1][0],
            "longest_lived": longest,
        }


def format_summary(summary: dict[str, Any]) -> str:
    if "total_first_mb" not in summary:
        return f"worker RSS: {summary.get('samples', 0)} samples, too few for a slope"
    lines = [f"worker RSS ({summary['samples']} samples): total {summary['total_first_mb']} -> "
             f"{summary['total_last_mb']} MB (max {summary['total_max_mb']}) over "
             f"{summary['signals_handled']} signals handled; slope "
             f"{summary['total_mb_per_1000_signals']} MB per 1000 signals, second half "
             f"{summary['second_half_mb_per_1000_signals']}"]
    lines += [f"  pid {p['pid']}: {p['first_mb']} -> {p['last_mb']} MB over "
              f"{p['signals_spanned']} signals ({p['samples']} samples), slope "
              f"{p['mb_per_1000_signals']} MB per 1000 signals"
              for p in summary["longest_lived"]]
    return "\n".join(lines)


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of MB against signals, per 1000 signals; None without a spread."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return round(cov / var * 1000, 3)
