"""Resource counters around one load phase: CPU per process group, Redis commands, Postgres
transactions and statements, plus percentiles and RSS."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil
import psycopg
import redis

from arbiter.embedded import libpq_url

BENCH_MARK = "/* bench */"  # tags the harness's own SQL (pg_stat_statements may drop it)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max (nearest rank) of `values`, in the unit given, rounded to 0.1."""
    if not values:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1)

    return {"n": len(ordered), "p50": rank(50), "p95": rank(95), "p99": rank(99),
            "max": round(ordered[-1], 1)}


def _cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            out[pid] = times.user + times.system
    return out


def rss_mb(pids: Sequence[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out[pid] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    return out


def redis_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


class Postgres:
    """The harness's own autocommit connection to one database."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(libpq_url(url), autocommit=True)
        self.own_statements = 0
        self._own_prefixes: set[str] = set()  # the harness's SQL, left out of the counts
        row = self.conn.execute("SELECT count(*) FROM pg_extension "
                                "WHERE extname = 'pg_stat_statements'").fetchone()
        self.has_statements = bool(row and row[0])

    def query(self, statement: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        self.own_statements += 1
        self._own_prefixes.add(" ".join(statement.split("%s")[0].split())[:40])
        cursor = self.conn.execute(f"{BENCH_MARK} {statement}", args)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description is not None else []

    def xact_commit(self) -> int:
        row = self.conn.execute("SELECT xact_commit FROM pg_stat_database "
                                "WHERE datname = current_database()").fetchone()
        return int(row[0]) if row else 0

    def reset_statements(self) -> None:
        if self.has_statements:
            self.conn.execute("SELECT pg_stat_statements_reset()")

    def statements(self, top: int = 40) -> tuple[int, int, list[dict[str, Any]]]:
        """(calls of every statement but ours, COMMITs among them, the top ones by time)."""
        if not self.has_statements:
            return 0, 0, []
        rows = self.conn.execute(
            "SELECT calls, total_exec_time, query FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() "
            "AND query NOT LIKE %s AND query NOT LIKE %s ORDER BY total_exec_time DESC",
            (f"%{BENCH_MARK}%", "%pg_stat_statements%"),
        ).fetchall()
        rows = [r for r in rows if not any(" ".join(str(r[2]).split()).startswith(p)
                                           for p in self._own_prefixes)]
        total = sum(int(r[0]) for r in rows)
        commits = sum(int(r[0]) for r in rows if str(r[2]).strip().upper() == "COMMIT")
        return total, commits, [{"calls": int(r[0]), "total_ms": round(float(r[1]), 1),
                        "query": " ".join(str(r[2]).split())[:160]} for r in rows[:top]]

    def close(self) -> None:
        self.conn.close()


class Phase:
    """Counters around one load phase: `start()`, run the load, `finish(units)`."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]], redis_client: redis.Redis,
                 pg: Postgres) -> None:
        self.groups = groups
        self.redis = redis_client
        self.pg = pg

    def start(self) -> None:
        self._pids = {name: pids() for name, pids in self.groups.items()}
        self._cpu = {name: _cpu_seconds(p) for name, p in self._pids.items()}
        self._redis = redis_calls(self.redis)
        self._own = self.pg.own_statements
        self._xact = self.pg.xact_commit()
        self.pg.reset_statements()
        self._t0 = time.monotonic()

    def finish(self, units: int) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        cpu: dict[str, float] = {}
        for name, pids in self.groups.items():
            now = _cpu_seconds(sorted(set(pids()) | set(self._pids[name])))
            before = self._cpu[name]
            cpu[name] = round(sum(v - before.get(pid, 0.0) for pid, v in now.items()), 2)
        redis_now = redis_calls(self.redis)
        commands = {k: v - self._redis.get(k, 0) for k, v in redis_now.items()}
        commands = {k: v for k, v in commands.items() if v > 0 and k != "info"}
        statements, commits, top = self.pg.statements()
        if not self.pg.has_statements:  # pg_stat_database lags by up to a few seconds
            own = self.pg.own_statements - self._own
            commits = self.pg.xact_commit() - self._xact - own - 2
        per = max(units, 1)
        return {
            "wall_s": round(wall, 2),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),  # others' load: how noisy
            "cpu_s": cpu,
            "cpu_ms_per_unit": {k: round(1000 * v / per, 2) for k, v in cpu.items()},
            "cpu_total_pct_of_wall": round(100 * sum(cpu.values()) / max(wall, 1e-9), 1),
            "redis_commands_per_unit": round(sum(commands.values()) / per, 1),
            "redis_top_commands_per_unit": {
                k: round(v / per, 2)
                for k, v in sorted(commands.items(), key=lambda kv: -kv[1])[:10]
            },
            "pg_commits_per_unit": round(commits / per, 2),
            "pg_statements_per_unit": round(statements / per, 1) if self.pg.has_statements
            else None,
            "pg_top_statements": top,
        }
