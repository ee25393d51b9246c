"""What one signal costs in each pipeline step, counted rather than timed.

    python bench/steps.py [--signals 200] [--services auto|local|embedded] [--show-sql]
                          [--profile [N]]

Runs the four pipeline tasks' bodies (intake, validate, check_conflict, submit) in this
process, one signal after another, against a fresh database, Redis and the brokerage simulator
(instant fills), and prints per step: the SQL statements sent (BEGIN and COMMIT aside), and the
Python function calls and CPU time per signal (alternate signals are profiled or timed).
Statements and function calls do not depend on what else the machine is doing, so two commits
compare fairly on a busy machine, where `bench/pipeline.py`'s throughput does not; CPU time is
shown for scale only. Celery's own work (messages, acks, the next link) is not in these
figures: `bench/pipeline.py` measures it.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository, not bench/, is importable
    # (bench/profile.py would otherwise stand in for the standard library's profile module)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import contextlib
import cProfile
import os
import pstats
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event

from bench.stack import RISK_ENV, Services
from core.signals import Signal
from core.signing import sign
from tests.fixtures.simulator import Simulator

STEPS = ("intake", "validate", "check_conflict", "submit")
WARMUP = 5  # signals run before counting: connections, prepared statements, caches


def _environment(database_url: str, redis_url: str, sim: Simulator) -> dict[str, str]:
    return {
        "ARBITER_DATABASE_URL": database_url,
        "ARBITER_REDIS_URL": redis_url,
        "ARBITER_BROKERAGE_URL": sim.url,
        "ARBITER_BROKERAGE_KEY": sim.key,
        "ARBITER_BROKERAGE_SECRET": sim.secret,
        **RISK_ENV,
        "ARBITER_INTAKE_MAX_PER_MINUTE": "1000000",
    }


@contextlib.contextmanager
def _stack(mode: str) -> Iterator[tuple[str, str, Simulator]]:
    with contextlib.ExitStack() as stack:
        services = Services(mode)
        stack.callback(services.stop)
        services.start()
        url = services.arbiter_database("steps")
        sim = Simulator(Path(tempfile.mkdtemp(prefix="arbiter-steps-")),
                        {"fill_latency_ms": 0, "partial_slices": 1})
        stack.callback(sim.close)
        sim.start()
        yield url, services.redis_url, sim


class Counter:
    """Statements per step, seen on the workers' engine."""

    def __init__(self) -> None:
        self.step = ""
        self.statements: dict[str, list[str]] = defaultdict(list)

    def __call__(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if self.step:
            self.statements[self.step].append(" ".join(statement.split()))


def run(args: argparse.Namespace) -> None:
    with _stack(args.services) as (url, redis_url, sim):
        os.environ.update(_environment(url, redis_url, sim))
        import tasks.app  # noqa: F401  (the app the tasks belong to)
        from tasks import pipeline
        from tasks.runtime import runtime

        rt = runtime()
        with rt.database.engine.connect() as conn:
            keys = dict(conn.exec_driver_sql("SELECT name, signing_key FROM strategies").all())
        counter = Counter()
        event.listen(rt.database.engine, "before_cursor_execute", counter)
        cpu: dict[str, float] = defaultdict(float)
        calls: dict[str, int] = defaultdict(int)
        for i in range(WARMUP + 2 * args.signals):
            signal = Signal.parse({"strategy": "trading", "signal_id": f"steps-{i}",
                                   "ticker": f"S{i % 1000:04d}", "side": "buy", "quantity": 1})
            message = sign(keys["trading"], signal.to_message(), int(time.time()))
            # After the warm-up, signals take turns: one timed, the next one profiled (the
            # profiler would inflate the time several fold).
            timed = i >= WARMUP and i % 2 == 0
            profiled = i >= WARMUP and i % 2 == 1
            argument: Any = message  # intake takes the message, the later steps the order id
            for step in STEPS:
                counter.step = step if i == WARMUP + 2 * args.signals - 1 else ""
                profile = cProfile.Profile() if profiled else None
                started = time.process_time()
                if profile is not None:
                    profile.enable()
                result = getattr(pipeline, step)(argument)
                if profile is not None:
                    profile.disable()
                    calls[step] += pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
                elif timed:
                    cpu[step] += time.process_time() - started
                argument = result
        counter.step = ""
        report(counter, cpu, calls, args.signals, args.show_sql)
        if args.profile:
            profile_one(pipeline, keys, args.profile)


def report(counter: Counter, cpu: dict[str, float], calls: dict[str, int], n: int,
           show_sql: bool) -> None:
    print(f"per signal, over {n} signals timed and {n} counted (statements: the last signal's)")
    print(f"{'step':<16}{'statements':>11}{'calls':>9}{'cpu ms':>9}")
    for step in STEPS:
        print(f"{step:<16}{len(counter.statements[step]):>11}{calls[step] // n:>9}"
              f"{1000 * cpu[step] / n:>9.2f}")
        if show_sql:
            for statement in counter.statements[step]:
                print(f"    {statement[:150]}")
    total = sum(len(counter.statements[s]) for s in STEPS)
    print(f"{'all':<16}{total:>11}{sum(calls.values()) // n:>9}"
          f"{1000 * sum(cpu.values()) / n:>9.2f}")
    print("(cpu ms: this process only, user and system; it varies with the machine's load)")


def profile_one(pipeline: Any, keys: dict[str, str], top: int) -> None:
    """The heaviest functions by cumulative time over a few more signals."""
    profile = cProfile.Profile(time.process_time)
    for i in range(50):
        signal = Signal.parse({"strategy": "trading", "signal_id": f"steps-profile-{i}",
                               "ticker": f"P{i:04d}", "side": "buy", "quantity": 1})
        message = sign(keys["trading"], signal.to_message(), int(time.time()))
        profile.enable()
        order_id = pipeline.intake(message)
        pipeline.validate(order_id)
        pipeline.check_conflict(order_id)
        pipeline.submit(order_id)
        profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=200)
    parser.add_argument("--services", choices=("embedded", "local", "auto"), default="auto")
    parser.add_argument("--show-sql", action="store_true", help="each step's statements")
    parser.add_argument("--profile", type=int, nargs="?", const=40, default=0,
                        help="print the N heaviest functions (cProfile, cumulative)")
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
