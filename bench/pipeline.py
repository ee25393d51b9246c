"""Arbiter's throughput and latency against the raw Celery ceiling, in one run.

    python bench/pipeline.py [--quick] [--json PATH] [--shape prefork2|prefork4|two-c1|split|all]
                             [--services embedded|local|auto] [--profile [wall|cpu]]

Starts what it needs, measures, stops everything (also on Ctrl-C), prints tables and writes
JSON (default bench/results/latest.json). See bench/README.md for what each figure means.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

import redis

from bench import fill_latency, history, report
from bench.eventbus import LagListener, catch_up
from bench.load import Arbiter, Ceiling, closed_loop, open_loop
from bench.measure import Phase, Postgres, rss_mb
from bench.profile import Profiler, summarise
from bench.reconcile_scale import reconcile_at_scale
from bench.stack import REPO_ROOT, RISK_ENV, SHAPES, Deployment, Services
from tests.fixtures.simulator import Simulator

RESULTS = REPO_ROOT / "bench" / "results"
COUNTS = {  # closed-loop sizes, open-loop seconds, reconciliation size
    "quick": {"ceiling_n": 1000, "arbiter_n": 500, "open_s": 8.0, "warmup": 20,
              "reconcile_n": 10_000, "timeout_s": 120.0},
    "full": {"ceiling_n": 10_000, "arbiter_n": 10_000, "open_s": 30.0, "warmup": 50,
             "reconcile_n": 10_000, "timeout_s": 900.0},
}
LOAD_FACTOR = 0.7


class Run:
    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.counts = COUNTS["quick" if args.quick else "full"]
        self.stack = stack
        self.work = RESULTS / "logs"  # this run's logs, kept for a look afterwards
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.data = Path(tempfile.mkdtemp(prefix="arbiter-bench-data-"))
        stack.callback(shutil.rmtree, self.data, ignore_errors=True)
        self.prefix = f"arbiter.bench.{secrets.token_hex(4)}.events"

    def setup(self) -> None:
        self.services = Services(self.args.services)
        self.stack.callback(self.services.stop)
        self.services.start()
        self.database_url = self.services.arbiter_database("run")
        self.sim = Simulator(self.data / "brokersim", {"fill_latency_ms": 0, "partial_slices": 1})
        self.stack.callback(self.sim.close)
        self.sim.start()
        self.pg = Postgres(self.database_url)
        self.stack.callback(self.pg.close)
        self.redis = redis.Redis.from_url(self.services.redis_url)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
        self.env.update(RISK_ENV, PYTHONPATH=str(REPO_ROOT),
                        ARBITER_DATABASE_URL=self.database_url,
                        ARBITER_REDIS_URL=self.services.redis_url,
                        ARBITER_EVENT_CHANNEL_PREFIX=self.prefix,
                        ARBITER_BROKERAGE_URL=self.sim.url, ARBITER_BROKERAGE_KEY=self.sim.key,
                        ARBITER_BROKERAGE_SECRET=self.sim.secret)
        if self.args.ceiling_brokerage:
            self.env["BENCH_CEILING_BROKERAGE"] = "1"
        self.ceiling, self.arbiter = Ceiling(self.services.redis_url, self.pg), Arbiter(
            self.services.redis_url, self.pg)
        self.stack.callback(self.ceiling.close)
        self.stack.callback(self.arbiter.close)

    def phase(self, deployment: Deployment) -> Phase:
        groups = {"worker main": deployment.main_pids, "worker pool": deployment.child_pids,
                  "postgres": self.services.postgres_pids,
                  "redis": self.services.redis_pids, "simulator": self._sim_pids,
                  "bench client": lambda: [os.getpid()]}
        return Phase(groups, self.redis, self.pg)

    def _sim_pids(self) -> list[int]:
        return [self.sim.proc.pid] if self.sim.proc and self.sim.proc.poll() is None else []

    def deploy(self, app: str, shape: str) -> Deployment:
        deployment = Deployment(app, shape, self.env, self.work)
        self.stack.callback(deployment.stop)  # harmless if stopped already
        return deployment.start()

    def shape(self, shape: str, primary: bool) -> dict[str, Any]:
        c, tag = self.counts, shape.replace("-", "")
        out: dict[str, Any] = {"shape": SHAPES[shape]}
        say(f"[{shape}] ceiling: {c['ceiling_n']} chains, closed loop")
        ceiling = self.deploy("bench.ceiling_tasks", shape)
        closed_loop(self.ceiling, f"{tag}cw", c["warmup"], c["timeout_s"])
        phase = self.phase(ceiling)
        phase.start()
        out["ceiling_closed"] = closed_loop(self.ceiling, f"{tag}cc", c["ceiling_n"],
                                            c["timeout_s"])
        out["ceiling_costs"] = phase.finish(c["ceiling_n"])
        rate = out["ceiling_closed"]["done"]["per_s"]
        say(f"[{shape}] ceiling: {rate}/s; open loop at {LOAD_FACTOR:.0%}")
        out["ceiling_open"] = open_loop(self.ceiling, f"{tag}co", LOAD_FACTOR * rate,
                                        c["open_s"], c["timeout_s"])
        ceiling.stop()

        say(f"[{shape}] Arbiter: {c['arbiter_n']} signals, closed loop")
        workers = self.deploy("tasks", shape)
        closed_loop(self.arbiter, f"{tag}aw", c["warmup"], c["timeout_s"])
        lag = LagListener(self.services.redis_url, self.prefix,
                          self.work / f"lag-{shape}.json").start()
        self.stack.callback(lag.close)
        profiler = Profiler(self.work / f"profile-{shape}", idle=self.args.profile != "cpu")
        if primary and self.args.profile:
            profiler.start(workers.child_pids())
        phase = self.phase(workers)
        phase.start()
        out["arbiter_closed"] = closed_loop(self.arbiter, f"{tag}ac", c["arbiter_n"],
                                            c["timeout_s"])
        out["arbiter_costs"] = phase.finish(c["arbiter_n"])
        if profiler.procs:
            summary = summarise(profiler.stop())
            (self.work / f"profile-{shape}.txt").write_text(summary + "\n")
            out["profile_summary"] = summary.splitlines()
        out["event_lag"] = lag.finish()
        rate = out["arbiter_closed"]["ORDER_SENT"]["per_s"]
        say(f"[{shape}] Arbiter: {rate}/s to ORDER_SENT; open loop at {LOAD_FACTOR:.0%}")
        out["arbiter_open"] = open_loop(self.arbiter, f"{tag}ao", LOAD_FACTOR * rate,
                                        c["open_s"], c["timeout_s"])
        sent = c["warmup"] + c["arbiter_n"] + out["arbiter_open"]["n"]
        out["worker_rss_mb"] = {"after_signals": sent, "by_pid": rss_mb(workers.pids())}
        workers.stop()
        return out

    def run(self) -> dict[str, Any]:
        started = datetime.now(UTC)
        self.load_at_start = os.getloadavg()[0]  # others' load on the shared machine
        self.setup()
        names = list(SHAPES) if self.args.shape == "all" else self.args.shape.split(",")
        shapes = {name: self.shape(name, primary=i == 0) for i, name in enumerate(names)}
        say(f"fill to FULLY_FILLED through the trade stream ({fill_latency.SIGNALS} signals)")
        fills = fill_latency.measure(self.env, self.data, self.work, names[0],
                                     self.services.redis_url, self.pg, self.counts["timeout_s"])
        say("event history catch-up")
        catch = catch_up(self.services.redis_url, self.database_url, self.prefix, self.pg)
        say(f"reconciliation: {self.counts['reconcile_n']} open orders")
        recon = reconcile_at_scale(self.services.new_database("reconcile"), self.data,
                                   self.counts["reconcile_n"])
        return assemble(self, shapes, catch, recon, fills, started)


def summary(s: dict[str, Any]) -> dict[str, Any]:
    ceiling = s["ceiling_closed"]["done"]["per_s"]
    sent = s["arbiter_closed"]["ORDER_SENT"]["per_s"]
    return {"ceiling_signals_per_s": ceiling, "order_sent_signals_per_s": sent,
            "filled_signals_per_s": s["arbiter_closed"]["FULLY_FILLED"]["per_s"],
            "ratio_order_sent": round(sent / ceiling, 3) if ceiling else float("nan"),
            "ceiling_p99_ms_70": s["ceiling_open"]["latency_ms"]["p99"],
            "order_sent_p99_ms_70": s["arbiter_open"]["latency_ms"]["p99"]}


def assemble(run: Run, shapes: dict[str, Any], catch: dict[str, Any], recon: dict[str, Any],
             fills: dict[str, Any], started: datetime) -> dict[str, Any]:
    primary_name = next(iter(shapes))
    p = shapes[primary_name]
    rss = p["worker_rss_mb"]["by_pid"]
    costs = p["arbiter_costs"]
    return {
        **summary(p),
        "fill_to_filled_p50_ms": fills["latency_ms"]["p50"],
        "fill_to_filled_p99_ms": fills["latency_ms"]["p99"],
        "pool_cpu_ms_per_signal": costs["cpu_ms_per_unit"].get("worker pool"),
        "pg_statements_per_signal": costs["pg_statements_per_unit"],
        "ceiling_p50_ms_70": p["ceiling_open"]["latency_ms"]["p50"],
        "order_sent_p50_ms_70": p["arbiter_open"]["latency_ms"]["p50"],
        "order_sent_p95_ms_70": p["arbiter_open"]["latency_ms"]["p95"],
        "reconcile_10k_s": recon["seconds"],
        "reconcile_10k_calls": recon["brokerage_calls"],
        "outbox_lag_p50_ms": p["event_lag"]["lag_ms"]["p50"],
        "outbox_lag_p99_ms": p["event_lag"]["lag_ms"]["p99"],
        "catch_up_events_per_s": catch["per_s"],
        "worker_rss_mb": max(rss.values()) if rss else float("nan"),
        "costs": {"ceiling": p["ceiling_costs"], "arbiter": p["arbiter_costs"]},
        "settings": {
            "quick": run.args.quick, "profiled": run.args.profile, "shape": primary_name,
            "ceiling_brokerage": run.args.ceiling_brokerage,
            "services": run.services.mode,
            "counts": run.counts, "load_factor": LOAD_FACTOR, "worker_env": RISK_ENV,
            "simulator": {"fill_latency_ms": 0, "partial_slices": 1},
            "workers": "celery worker -l INFO --without-gossip --without-mingle, no beat",
            "signals": "market buys of 1 share from `trading` over 1000 tickers",
        },
        **report.environment(),
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "load_avg_1m_at_start": round(run.load_at_start, 2),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "shapes": {name: {**summary(s), **s} for name, s in shapes.items()},
        "event_catch_up": catch,
        "reconcile": recon,
        "fill_to_filled": fills,
    }


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (under 3 minutes)")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--shape", default="prefork2",
                        help=f"one of {', '.join(SHAPES)}, a comma list, or all")
    parser.add_argument("--services", choices=("embedded", "local", "auto"), default="embedded")
    parser.add_argument("--profile", nargs="?", const="wall", choices=["wall", "cpu"],
                        help="py-spy the first shape's pool processes during its closed loop")
    parser.add_argument("--ceiling-brokerage", action="store_true",
                        help="the ceiling also makes Arbiter's two brokerage calls per chain")
    args = parser.parse_args(argv)
    unknown = set(args.shape.split(",")) - set(SHAPES) - {"all"}
    if unknown:
        parser.error(f"unknown shape(s) {sorted(unknown)}; known: {', '.join(SHAPES)}")
    if args.profile and not Profiler.available():
        parser.error("--profile needs py-spy: /work/venv/bin/pip install py-spy")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the ExitStack then stops everything started


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    with contextlib.ExitStack() as stack:
        result = Run(args, stack).run()
    report.write_json(result, args.json)
    report.print_tables(result)
    say(f"wrote {args.json}")
    say(f"appended to {history.append(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
