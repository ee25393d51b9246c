"""The chaos runner: a whole private stack, four strategy processes sending seeded signals, and
seeded faults injected while they run; afterwards the invariants I1-I8 are checked.

    python -m tests.system.chaos --signals 300 --faults 12 --seed 7 [--json report.json]
    python -m tests.system.chaos --signals 400 --faults 15 --seed 11271 --seeds 20   # a sweep
    python -m tests.system.chaos --broker amqp ...                       # RabbitMQ as broker

Stack: a private Redis (arbiter.embedded.EmbeddedRedis, so it can be stopped and restarted),
with --broker amqp a private RabbitMQ node (tests/fixtures/rabbitmq.PrivateRabbitMQ, on a free
port, so it can be stopped and started without touching the machine's shared one), a fresh
database on 127.0.0.1:5432 when it answers (else an embedded Postgres), the brokerage
simulator, N worker processes and a beat, all on 127.0.0.1 and all stopped at the end, also on
failure. An EventSubscriber runs in a thread throughout (I5); a sampler records the workers'
RSS (tests/system/rss.py). A worker or beat that exits with no fault on it is restarted, as
`arbiter up`'s supervisor and compose's restart policy do, and listed in the report.

Faults (kind, seeded moment, details printed and reported): worker_kill (SIGKILL main + pool,
then restart), crash_point (a worker restarted with one of tasks/crashpoints.NAMES armed; a
whole-worker point may fire before the worker's ready line, which is the fault, not an error),
redis_restart (clean stop, start on the same port), rabbitmq_restart (with --broker amqp: the
node stopped and started with its data), pg_terminate (pg_terminate_backend on the app's
connections), sim_latency, sim_5xx, sim_accept_timeout, second_beat, worker_sigstop
(SIGSTOP/SIGCONT for a moment) and, when the fault window is long enough, worker_sigstop_long
(stopped past the visibility timeout, ARBITER_VISIBILITY_TIMEOUT_S, so on Redis its messages
are redelivered to another worker while it still holds them; RabbitMQ has no such timeout and
waits for it).

Invariants, after the faults stop and at most `settle_bound_s` (default 120 s) for I2:
  I1 one brokerage order per client_order_id; one Arbiter order per (strategy, signal_id)
  I2 every accepted signal terminal or in manual review within the bound
  I3 every brokerage order has its Arbiter order; states, filled quantities and average prices
     agree after a final reconciliation; fills sum to the filled quantity; positions per ticker
     equal the brokerage's
  I4 ownership intervals per ticker never overlap
  I5 every transition's event is in the history exactly once; the subscriber saw every event
  I6 every audit trail is a valid path through the state table ending in the order's state
  I7 every cancel request ended: its order is final (CANCELLED, or filled first, fills booked)
  I8 every filled protective stop announced POSITION_STOP_LOSS_TRIGGERED exactly once
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import func, select

from arbiter.embedded import EmbeddedPostgres, EmbeddedRedis, libpq_url, postgres_reachable
from core.signals import client_order_id_for
from core.states import TERMINAL_STATES
from db.engine import Database
from db.migrate import upgrade
from db.models import EventRecord, Order
from db.publisher import EventPublisher, relay_unpublished
from db.seed import seed_default_strategies
from service_layer.reconciliation import reconcile_open_orders
from strategy_client.subscriber import EventSubscriber
from tasks.crashpoints import NAMES as CRASH_POINTS
from tests.fixtures.processes import FAST_MAINTENANCE, CeleryProcess
from tests.fixtures.rabbitmq import PrivateRabbitMQ
from tests.fixtures.simulator import REPO_ROOT, Simulator
from tests.system.invariants import check_invariants
from tests.system.rss import RssSampler, format_summary

LOCAL_POSTGRES = os.environ.get(
    "ARBITER_TEST_POSTGRES_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
STRATEGIES = ("long_term", "dividend", "trading", "aggressive")
TICKERS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "META", "AMD", "IBM")
WHOLE_WORKER_POINTS = {"after_brokerage_accepted", "mid_reconciliation"}
FAULT_WEIGHTS = {
    "worker_kill": 2.0,
    "crash_point": 2.0,
    "redis_restart": 1.5,
    "pg_terminate": 2.0,
    "sim_latency": 1.0,
    "sim_5xx": 1.0,
    "sim_accept_timeout": 1.0,
    "second_beat": 0.7,
    "worker_sigstop": 1.0,
}
AMQP_FAULT_WEIGHTS = {"rabbitmq_restart": 1.5}  # with RabbitMQ as the broker


@dataclass
class ChaosConfig:
    signals: int = 300
    faults: int = 12
    seed: int = 1
    workers: int = 2
    concurrency: int = 2
    send_rate: float = 6.0  # signals per second, all strategies together
    settle_bound_s: float = 120.0  # I2: after the faults stop
    visibility_timeout_s: int = 40  # above the task time limit plus the longest backoff (13 s)
    task_time_limit_s: int = 25
    long_stop: bool | None = None  # None: when the fault window exceeds visibility + 15 s
    broker: str = "redis"  # or "amqp": a private RabbitMQ node, restarted as a fault
    workdir: Path | None = None
    say: Callable[[str], None] = print


@dataclass
class FaultRecord:
    kind: str
    at_s: float
    details: dict[str, Any] = field(default_factory=dict)
    ended_at_s: float | None = None


@dataclass
class ChaosReport:
    seed: int
    signals: dict[str, int]
    faults: list[FaultRecord]
    orders_by_state: dict[str, int]
    in_review: int
    reasons: dict[str, int]  # why orders ended REJECTED / FAILED / in review (first words)
    brokerage_orders: int
    events: int
    violations: list[str]
    timings: dict[str, float]
    workdir: str
    rss: dict[str, Any] = field(default_factory=dict)  # worker memory, see tests/system/rss.py
    exits: list[dict[str, Any]] = field(default_factory=list)  # unplanned, restarted

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["faults"] = [{"kind": f.kind, "at_s": f.at_s, "ended_at_s": f.ended_at_s,
                           **f.details} for f in self.faults]
        return data

    def format(self) -> str:
        lines = [f"chaos run, seed {self.seed} (logs in {self.workdir})",
                 "signals: " + ", ".join(f"{k} {v}" for k, v in self.signals.items()),
                 f"faults injected ({len(self.faults)}):"]
        lines += [f"  {f.at_s:7.1f}s  {f.kind:<20} {f.details}" for f in self.faults]
        lines.append("orders by state: " + ", ".join(
            f"{k} {v}" for k, v in sorted(self.orders_by_state.items())))
        lines.append("reasons: " + "; ".join(f"{k} x{n}" for k, n in self.reasons.items()))
        lines.append(f"in manual review {self.in_review}; brokerage orders "
                     f"{self.brokerage_orders}; events {self.events}")
        lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        if self.rss:
            lines.append(format_summary(self.rss))
        lines.append(f"unplanned exits, restarted as a supervisor would ({len(self.exits)})"
                     + "".join(f"\n  {e['at_s']:7.1f}s {e['process']} exit {e['code']}: "
                               f"{e['error']}" for e in self.exits))
        lines.append(f"violations ({len(self.violations)}):" if self.violations
                     else "violations: none, I1-I8 held")
        lines += [f"  {v}" for v in self.violations[:200]]
        return "\n".join(lines)


# -- the signals -------------------------------------------------------------------------------


def plan_signals(cfg: ChaosConfig) -> dict[str, list[dict[str, Any]]]:
    """Per strategy, the items to send, each with its send offset (seconds) and kind: `ok`,
    `repeat` (an earlier signal again), `client_bad` (InvalidSignal at the client) or
    `raw_bad` (enqueued raw, to end REJECTED at intake), `protective` (a trailing stop sell on
    the strategy's home ticker) or `cancel` (of an earlier signal of the strategy, and always
    of each protective stop)."""
    rng = random.Random(cfg.seed)
    plan: dict[str, list[dict[str, Any]]] = {s: [] for s in STRATEGIES}
    for i in range(cfg.signals):
        strategy = rng.choice(STRATEGIES)
        at = i / cfg.send_rate
        draw = rng.random()
        mine = [item for item in plan[strategy] if item["kind"] == "ok"]
        if draw < 0.03 and mine:
            item = {**dict(rng.choice(mine)), "kind": "repeat"}
        elif draw < 0.05:
            bad: dict[str, Any] = rng.choice([
                {"quantity": -1}, {"quantity": "NaN"}, {"ticker": "NOT A TICKER"},
                {"side": "hold"}, {"quantity": 10**12}])
            item = {"kind": "client_bad", "args": {**_good_args(rng, strategy, i), **bad}}
        elif draw < 0.07:
            raw = {**_good_args(rng, strategy, i), "quantity": rng.choice(["-5", "NaN", "x"])}
            item = {"kind": "raw_bad", "args": raw}
        elif draw < 0.10:
            # A protective stop on the strategy's own position (a trailing stop that the price
            # path soon triggers), and a cancel of it a moment later: it ends filled (the
            # stop-loss fired: the lock is released) or cancelled.
            home = TICKERS[2 * STRATEGIES.index(strategy)]
            args = {**_good_args(rng, strategy, i), "ticker": home, "side": "sell",
                    "order_type": "trailing_stop", "trail_percent": "0.05",
                    "time_in_force": "gtc"}
            plan[strategy].append({"kind": "protective", "args": args, "at": at})
            item = {"kind": "cancel", "args": _cancel_args(args)}
            at += rng.uniform(0.5, 4.0)
        elif draw < 0.13 and mine:
            item = {"kind": "cancel", "args": _cancel_args(rng.choice(mine)["args"])}
        else:
            item = {"kind": "ok", "args": _good_args(rng, strategy, i)}
        plan[strategy].append({**item, "at": at})
    for items in plan.values():
        items.sort(key=lambda item: item["at"])
    return plan


def _cancel_args(target: dict[str, Any]) -> dict[str, Any]:
    return {"strategy": target["strategy"], "signal_id": target["signal_id"]}


def _good_args(rng: random.Random, strategy: str, i: int) -> dict[str, Any]:
    # Mostly the strategy's own two tickers (fills), sometimes anyone's (conflicts).
    home = 2 * STRATEGIES.index(strategy)
    ticker = rng.choice(TICKERS[home:home + 2] if rng.random() < 0.7 else TICKERS)
    return {"strategy": strategy, "ticker": ticker,
            "side": "buy" if rng.random() < 0.75 else "sell",
            "quantity": rng.randint(1, 20), "signal_id": f"chaos-{i}"}


def strategy_main(redis_url: str, broker_url: str, items: list[dict[str, Any]],
                  start_at: float, out_path: str, keys: dict[str, str]) -> None:
    """One strategy process: send each item at its moment; retry an enqueue that fails (Redis
    down) with the same signal_id for up to 90 s. Writes the outcomes as JSON."""
    from core.errors import InvalidSignal
    from strategy_client.client import SignalClient

    client = SignalClient(redis_url, broker_url, keys=keys)
    results = []
    for item in items:
        time.sleep(max(0.0, start_at + item["at"] - time.time()))
        args = dict(item["args"])
        coid = client_order_id_for(args["strategy"], args["signal_id"])
        outcome, error, deadline = "gave_up", "", time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if item["kind"] == "raw_bad":
                    client.enqueue(args)
                elif item["kind"] == "cancel":
                    client.cancel(args["strategy"], args["signal_id"])
                    outcome = "cancel_sent"
                    break
                else:
                    client.submit_signal(args.pop("strategy"), args.pop("ticker"),
                                         args.pop("side"), args.pop("quantity"), **args)
                outcome = "accepted"
                break
            except InvalidSignal as exc:
                outcome, error = "invalid", f"{exc.field}: {exc}"
                break
            except Exception as exc:  # the broker is away: same signal again, later
                error = repr(exc)
                args = dict(item["args"])
                time.sleep(0.5)
        results.append({"kind": item["kind"], "coid": coid, "outcome": outcome, "error": error})
    client.close()
    Path(out_path).write_text(json.dumps(results))


# -- the stack ---------------------------------------------------------------------------------


class Stack:
    """Everything one chaos run starts; `close()` stops all of it, whatever state it is in."""

    def __init__(self, cfg: ChaosConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.redis = EmbeddedRedis(workdir / "redis")
        self.rabbitmq = PrivateRabbitMQ(workdir / "rabbitmq") if cfg.broker == "amqp" else None
        self.pg: EmbeddedPostgres | None = None
        self.admin_url = ""
        self.db_name = f"arbiter_chaos_{os.getpid()}_{secrets.token_hex(4)}"
        self.database_url = ""
        self.db: Database | None = None
        self.subscriber_db: Database | None = None
        self.say = cfg.say
        self.sim: Simulator | None = None
        self.env: dict[str, str] = {}
        self.workers: list[CeleryProcess] = []
        self.beats: list[CeleryProcess] = []
        self._started: list[CeleryProcess] = []
        self.incidents: list[str] = []
        self.exits: list[dict[str, Any]] = []  # processes that died with no fault on them
        self._seen_exits: set[int] = set()

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def broker_url(self) -> str:
        return self.rabbitmq.url if self.rabbitmq is not None else self.redis.url

    def start(self) -> None:
        self.redis.start()
        if self.rabbitmq is not None:
            self.rabbitmq.start()
        if LOCAL_POSTGRES != "embedded" and postgres_reachable(LOCAL_POSTGRES, timeout=1):
            self.admin_url = LOCAL_POSTGRES
        else:
            self.pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="arbiter-chaos-pg-")),
                                       database="postgres")
            self.pg.start()
            self.admin_url = self.pg.admin_url
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db_name)))
        self.database_url = self.admin_url.rsplit("/", 1)[0] + f"/{self.db_name}"
        upgrade(self.database_url)
        self.db = Database(self.database_url, application_name="chaos-checker")
        with self.db.unit_of_work() as uow:
            seed_default_strategies(uow.session)
            uow.commit()
        self.sim = Simulator(self.workdir / "brokersim",
                             {"fill_latency_ms": 300, "partial_slices": 2, "tick_ms": 20,
                              "seed": self.cfg.seed}).start(timeout=120)  # a busy machine
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
        env.update(FAST_MAINTENANCE)
        env.update(
            ARBITER_DATABASE_URL=self.database_url,
            ARBITER_REDIS_URL=self.redis_url,
            ARBITER_BROKER_URL=self.broker_url,
            ARBITER_EVENT_CHANNEL_PREFIX=f"arbiter.chaos.{secrets.token_hex(4)}.events",
            ARBITER_BROKERAGE_URL=self.sim.url,
            ARBITER_BROKERAGE_KEY=self.sim.key,
            ARBITER_BROKERAGE_SECRET=self.sim.secret,
            ARBITER_VISIBILITY_TIMEOUT_S=str(self.cfg.visibility_timeout_s),
            ARBITER_TASK_TIME_LIMIT_S=str(self.cfg.task_time_limit_s),
            # A queue backlog is not a stall: re-driving it early only adds to it, and on a busy
            # machine the duplicates feed the backlog they came from. Production's default.
            ARBITER_STALLED_AFTER_S="30",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        )
        self.env = env

    def signing_keys(self) -> dict[str, str]:
        """Each strategy's signing key, for the strategy processes."""
        from db.strategies import signing_keys

        with self.db.unit_of_work() as uow:
            return signing_keys(uow.session)

    def new_worker(self, index: int, extra: dict[str, str] | None = None,
                   armed: Callable[[], bool] = lambda: False) -> CeleryProcess:
        """Start worker `index` and wait for its ready line. A worker that dies before that is
        not the runner's failure: if `armed()` says an injected fault fired, the dead worker
        is returned (the fault's finish restarts it); otherwise the exit is noted as an
        incident (a violation in the report) and the worker is started again, up to 3 times."""
        name = f"w{index}"
        for attempt in range(1, 4):
            worker = CeleryProcess(
                ["worker", "-l", "INFO", "-n", f"{name}@%h", "-c", str(self.cfg.concurrency),
                 "-Q", "signals,orders,maintenance", "--without-gossip", "--without-mingle"],
                {**self.env, **(extra or {})}, self.workdir / f"worker-{name}.log",
                ready="ready.")
            self._started.append(worker)
            if self._start(worker, 90) or armed():
                return worker
            if worker.proc is not None and worker.proc.poll() is None:
                self.say(f"[chaos] worker {name} not ready after 90 s: kept running")
                return worker
            self.incident(f"worker {name} exited during start-up with no fault armed "
                          f"(attempt {attempt}, exit {worker.proc and worker.proc.returncode})")
            extra = None
        return worker

    def new_beat(self, name: str) -> CeleryProcess:
        beat = CeleryProcess(["beat", "-l", "INFO", "-s", str(self.workdir / f"{name}-schedule")],
                             self.env, self.workdir / f"{name}.log", ready="beat: Starting")
        self._started.append(beat)
        if not self._start(beat, 60):
            self.incident(f"beat {name} did not start (exit "
                          f"{beat.proc and beat.proc.poll()}); see {beat.log_path}")
        return beat

    def _start(self, proc: CeleryProcess, timeout: float) -> bool:
        """True once `proc` printed its ready line; False if it exited or timed out first."""
        try:
            proc.start(timeout=timeout)
        except RuntimeError:
            return False
        return True

    def supervise(self, held: set[str], now_s: float) -> None:
        """Restart a worker or beat that exited on its own, as `arbiter up`'s supervisor and
        compose's `restart: unless-stopped` do in production (Celery's worker can exit on a
        broker restart: kombu's unacked-restore meeting a closed connection). Processes a
        fault holds are the fault's business, and while a fault holds Redis or RabbitMQ the
        restart waits for it (a worker cannot start without them, and the runner must not block
        the fault's end). Each such exit is reported, not a violation."""
        for i, worker in enumerate(self.workers):
            if f"w{i}" in held or worker.proc is None or worker.proc.poll() is None:
                continue
            why = _last_error(worker.log())
            if id(worker) not in self._seen_exits:
                self._seen_exits.add(id(worker))
                self.exits.append({"process": f"w{i}", "at_s": now_s,
                                   "code": worker.proc.returncode, "error": why})
                self.say(f"[chaos] {now_s:7.1f}s w{i} exited on its own ({why})")
            if held & {"redis", "rabbitmq"}:
                continue
            self.say(f"[chaos] {now_s:7.1f}s restarting w{i}")
            self.workers[i] = self.new_worker(i)
        for i, beat in enumerate(self.beats):
            if beat.proc is not None and beat.proc.poll() is not None and not (
                    held & {"redis", "rabbitmq"}):
                self.exits.append({"process": "beat", "at_s": now_s,
                                   "code": beat.proc.returncode, "error": _last_error(beat.log())})
                self.say(f"[chaos] {now_s:7.1f}s the beat exited on its own: restarting it")
                self.beats[i] = self.new_beat(f"beat-again-{len(self.exits)}")

    def incident(self, text: str) -> None:
        """Something the runner did not inject went wrong: reported as a violation."""
        self.incidents.append(text)
        self.say(f"[chaos] incident: {text}")

    def log_files(self) -> list[Path]:
        return sorted(self.workdir.rglob("*.log"))

    def close(self) -> None:
        for proc in reversed(self._started):
            with contextlib.suppress(Exception):
                for pid in proc.pids:  # a SIGSTOPped process cannot act on SIGTERM
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                proc.stop()
        if self.sim is not None:
            with contextlib.suppress(Exception):
                self.sim.close()
        for database in (self.db, self.subscriber_db):
            if database is not None:
                database.dispose()
        if self.database_url:
            with contextlib.suppress(psycopg.Error), psycopg.connect(
                    libpq_url(self.admin_url), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(self.db_name)))
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.remove()
        with contextlib.suppress(Exception):
            self.redis.remove()
        if self.rabbitmq is not None:
            with contextlib.suppress(Exception):
                self.rabbitmq.stop()


# -- the faults --------------------------------------------------------------------------------


@dataclass
class _Active:
    record: FaultRecord
    resources: set[str]
    end_at: float
    finish: Callable[[], None]
    done_early: Callable[[], bool] = lambda: False


class FaultInjector:
    """Runs the seeded schedule; a fault holds its resources (a worker, Redis, the simulator,
    the second beat) until it ends, so two faults never fight over one of them."""

    def __init__(self, stack: Stack, cfg: ChaosConfig, window_s: float, t0: float) -> None:
        self.stack, self.cfg, self.t0 = stack, cfg, t0
        self.rng = random.Random(cfg.seed * 7919 + 1)
        self.records: list[FaultRecord] = []
        self.active: list[_Active] = []
        # Each kind once (as far as K allows), the rest drawn by weight, at seeded moments.
        weights = {**FAULT_WEIGHTS, **(AMQP_FAULT_WEIGHTS if cfg.broker == "amqp" else {})}
        kinds = list(weights)
        self.rng.shuffle(kinds)
        drawn = kinds[:cfg.faults] + self.rng.choices(
            kinds, [weights[k] for k in kinds], k=max(0, cfg.faults - len(kinds)))
        plan = sorted((round(self.rng.uniform(2.0, window_s), 1), kind) for kind in drawn)
        long_stop = cfg.long_stop
        if long_stop is None:
            long_stop = window_s >= cfg.visibility_timeout_s + 15
        if long_stop and plan:
            plan[0] = (plan[0][0], "worker_sigstop_long")
        self.plan = plan
        self.points = list(CRASH_POINTS)
        self.rng.shuffle(self.points)

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def run(self, deadline_s: float) -> None:
        pending = list(self.plan)
        while pending or self.active:
            now = self.now()
            self.stack.supervise(self._busy(), now)
            for active in list(self.active):
                if now >= active.end_at or active.done_early() or now > deadline_s:
                    self._end(active)
            if pending and pending[0][0] <= now:
                at, kind = pending[0]
                if self._can_start(kind):
                    pending.pop(0)
                    self._start(kind)
                elif now - at > 60 or now > deadline_s:
                    pending.pop(0)
                    self.cfg.say(f"[chaos] {now:7.1f}s skipped {kind}: resources busy")
            time.sleep(0.1)

    def _end(self, active: _Active) -> None:
        self.active.remove(active)
        try:
            active.finish()
        except Exception as exc:  # e.g. Redis would not come back: reported, and the run goes on
            self.stack.incident(f"ending {active.record.kind} at {self.now()}s failed: {exc!r}")
        active.record.ended_at_s = self.now()

    def _busy(self) -> set[str]:
        return set().union(*(a.resources for a in self.active)) if self.active else set()

    def _can_start(self, kind: str) -> bool:
        """Worker restarts need Redis (and RabbitMQ, when it is the broker): a kill or crash
        point holds "redis" and "rabbitmq" until its worker is back, and a broker restart
        waits for them (and they for it)."""
        busy = self._busy()
        needs = {"worker_kill": {"redis", "rabbitmq"}, "crash_point": {"redis", "rabbitmq"},
                 "redis_restart": {"redis"}, "rabbitmq_restart": {"rabbitmq"},
                 "pg_terminate": set(), "second_beat": {"beat2"}}.get(kind, set())
        if kind.startswith("sim_"):
            needs = {"sim"}
        if needs & busy:
            return False
        return not kind.startswith(("worker", "crash")) or bool(self._free_workers())

    def _free_workers(self) -> list[int]:
        busy = self._busy()
        return [i for i in range(len(self.stack.workers)) if f"w{i}" not in busy]

    def _worker(self) -> int:
        return self.rng.choice(self._free_workers())

    def _start(self, kind: str) -> None:
        record = FaultRecord(kind, self.now())
        self.records.append(record)
        start = getattr(self, f"_{kind}")
        resources, duration, finish, early = start(record)
        self.cfg.say(f"[chaos] {record.at_s:7.1f}s {kind} {record.details}")
        self.active.append(_Active(record, resources, self.now() + duration, finish,
                                   early or (lambda: False)))

    # Each fault: act now, return (resources held, duration, finish(), done_early or None).

    def _worker_kill(self, record: FaultRecord) -> tuple[Any, ...]:
        i = self._worker()
        record.details.update(worker=f"w{i}", pids=self.stack.workers[i].pids)
        self.stack.workers[i].kill()

        def finish() -> None:
            self.stack.workers[i] = self.stack.new_worker(i)

        return {f"w{i}", "redis", "rabbitmq"}, self.rng.uniform(0.5, 2.0), finish, None

    def _crash_point(self, record: FaultRecord) -> tuple[Any, ...]:
        i = self._worker()
        point = self.points[sum(r.kind == "crash_point" for r in self.records) % len(self.points)]
        nth = self.rng.randint(1, 3)
        state_dir = self.stack.workdir / f"crash-{len(self.records)}"
        state_dir.mkdir()
        extra = {"ARBITER_CRASH_POINTS": f"{point}:{nth}",
                 "ARBITER_CRASH_STATE_DIR": str(state_dir)}
        if point in WHOLE_WORKER_POINTS:
            extra["ARBITER_CRASH_WHOLE_WORKER"] = "1"
        record.details.update(worker=f"w{i}", point=point, nth=nth)
        self.stack.workers[i].kill()
        marker = state_dir / f"{point}.fired"
        # A whole-worker point may fire before the ready line (the worker takes tasks, or runs
        # its start-up recovery, while it is still starting): that is this fault, not an error.
        self.stack.workers[i] = self.stack.new_worker(i, extra, armed=marker.exists)
        if marker.exists():
            record.details["during_start_up"] = True

        def fired() -> bool:
            proc = self.stack.workers[i].proc
            return marker.exists() and (point not in WHOLE_WORKER_POINTS
                                        or proc is None or proc.poll() is not None)

        def finish() -> None:
            record.details["fired"] = marker.exists()
            worker = self.stack.workers[i]
            if worker.proc is None or worker.proc.poll() is not None or not marker.exists():
                worker.kill()  # still armed: disarm it the hard way
                self.stack.workers[i] = self.stack.new_worker(i)

        return {f"w{i}", "redis", "rabbitmq"}, 20.0, finish, fired

    def _redis_restart(self, record: FaultRecord) -> tuple[Any, ...]:
        down = self.rng.uniform(1.0, 4.0)
        record.details.update(down_s=round(down, 1))
        self.stack.redis.stop()
        return {"redis"}, down, self.stack.redis.start, None

    def _rabbitmq_restart(self, record: FaultRecord) -> tuple[Any, ...]:
        """The private RabbitMQ node stopped cleanly (every connection closed, unacked messages
        back on their queues) and started again on the same port with the same data."""
        rabbitmq = self.stack.rabbitmq
        assert rabbitmq is not None
        down = self.rng.uniform(1.0, 4.0)
        record.details.update(down_s=round(down, 1))
        rabbitmq.stop()
        return {"rabbitmq"}, down, rabbitmq.start, None

    def _pg_terminate(self, record: FaultRecord) -> tuple[Any, ...]:
        with psycopg.connect(libpq_url(self.stack.admin_url), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND application_name LIKE 'arbiter%%' AND pid <> pg_backend_pid()",
                (self.stack.db_name,)).fetchall()
        record.details.update(terminated=len(rows))
        return set(), 0.0, lambda: None, None

    def _sim(self, record: FaultRecord, duration: float, reset: dict[str, Any],
             **knobs: Any) -> tuple[Any, ...]:
        assert self.stack.sim is not None
        record.details.update(knobs)
        self.stack.sim.admin.set_faults(**knobs)
        return {"sim"}, duration, lambda: self.stack.sim.admin.set_faults(**reset), None

    def _sim_latency(self, record: FaultRecord) -> tuple[Any, ...]:
        return self._sim(record, self.rng.uniform(2, 5), {"latency_ms": 0},
                         latency_ms=self.rng.randint(300, 1500))

    def _sim_5xx(self, record: FaultRecord) -> tuple[Any, ...]:
        return self._sim(record, 3.0, {"error_count": 0}, error_count=self.rng.randint(5, 25))

    def _sim_accept_timeout(self, record: FaultRecord) -> tuple[Any, ...]:
        return self._sim(record, 6.0, {"accept_then_timeout_count": 0},
                         accept_then_timeout_count=self.rng.randint(1, 3), hang_ms=3000)

    def _second_beat(self, record: FaultRecord) -> tuple[Any, ...]:
        beat = self.stack.new_beat(f"beat2-{len(self.records)}")
        duration = self.rng.uniform(5, 10)
        record.details.update(for_s=round(duration, 1))
        return {"beat2"}, duration, beat.stop, None

    def _stop_worker(self, record: FaultRecord, duration: float) -> tuple[Any, ...]:
        i = self._worker()
        pids = self.stack.workers[i].pids
        record.details.update(worker=f"w{i}", for_s=round(duration, 1))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

        def finish() -> None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        return {f"w{i}"}, duration, finish, None

    def _worker_sigstop(self, record: FaultRecord) -> tuple[Any, ...]:
        return self._stop_worker(record, self.rng.uniform(1.0, 3.0))

    def _worker_sigstop_long(self, record: FaultRecord) -> tuple[Any, ...]:
        return self._stop_worker(record, self.cfg.visibility_timeout_s + 10.0)


# -- the run -----------------------------------------------------------------------------------


def run_chaos(cfg: ChaosConfig) -> ChaosReport:
    """Start the stack, send, inject, settle, check; everything is stopped before returning."""
    workdir = cfg.workdir or Path(tempfile.mkdtemp(prefix="arbiter-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(cfg, workdir)
    senders: list[Any] = []
    subscriber_thread = None
    sampler: RssSampler | None = None
    timings: dict[str, float] = {}
    began = time.monotonic()
    try:
        stack.start()
        assert stack.db is not None and stack.sim is not None
        seen: Counter[str] = Counter()
        stack.subscriber_db = Database(stack.database_url, pool_size=1,
                                       application_name="arbiter-chaos-subscriber")
        subscriber = EventSubscriber(
            stack.redis_url, stack.subscriber_db,
            stack.env["ARBITER_EVENT_CHANNEL_PREFIX"], remember=max(20_000, cfg.signals * 30))
        subscriber.on(None, lambda event: seen.update([str(event.id)]))
        subscriber_thread = subscriber.run_in_thread()
        if not subscriber_thread.wait_ready(30):
            raise RuntimeError(f"event subscriber not ready: {subscriber_thread.error!r}")
        stack.workers = [stack.new_worker(i) for i in range(cfg.workers)]
        stack.beats = [stack.new_beat("beat")]
        timings["stack_start"] = time.monotonic() - began

        plan = plan_signals(cfg)
        window = cfg.signals / cfg.send_rate
        context = multiprocessing.get_context("spawn")
        start_at = time.time() + 1.0
        sampler = RssSampler(
            pids=lambda: [pid for worker in stack.workers for pid in worker.pids],
            handled=lambda: _orders_recorded(stack), log_path=workdir / "rss.jsonl").start()
        for strategy, items in plan.items():
            proc = context.Process(target=strategy_main, name=f"strategy-{strategy}", args=(
                stack.redis_url, stack.broker_url, items, start_at,
                str(workdir / f"sent-{strategy}.json"), stack.signing_keys()))
            proc.start()
            senders.append(proc)
        t0 = time.monotonic()
        injector = FaultInjector(stack, cfg, window + 5, t0)
        cfg.say(f"[chaos] seed {cfg.seed}: {cfg.signals} signals over {window:.0f}s, "
                f"fault plan {injector.plan}")
        injector.run(deadline_s=window + 5 + cfg.visibility_timeout_s + 60)
        for proc in senders:
            proc.join(timeout=max(10.0, window + 120 - (time.monotonic() - t0)))
        _calm(stack)
        timings["faults_and_sending"] = time.monotonic() - t0

        sent = [r for s in STRATEGIES
                for r in json.loads((workdir / f"sent-{s}.json").read_text())]
        accepted = {r["coid"] for r in sent if r["outcome"] == "accepted"}
        settled_at = time.monotonic()
        unsettled = _wait_settled(stack.db, accepted, cfg.settle_bound_s,
                                  lambda: stack.supervise(set(), injector.now()))
        timings["settle"] = time.monotonic() - settled_at

        sampler.stop()
        sampler.sample()
        for celery in [*stack.beats, *stack.workers]:
            celery.stop()
        brokerage = stack.sim.brokerage()
        reconcile_open_orders(stack.db, brokerage, never_received_grace_s=5)
        publisher = EventPublisher(stack.redis_url, stack.env["ARBITER_EVENT_CHANNEL_PREFIX"],
                                   stack.db)
        relay_unpublished(stack.db, publisher)
        violations = [f"I2: {coid} not terminal nor in review {cfg.settle_bound_s:.0f}s after "
                      f"the faults stopped ({state})" for coid, state in unsettled.items()]
        violations += check_invariants(stack.db, stack.sim, sent, seen)
        violations += [f"runner: {text}" for text in stack.incidents]
        with stack.db.unit_of_work() as uow:
            by_state = Counter(uow.session.scalars(select(Order.state)))
            review = len(list(uow.session.scalars(select(Order.id).where(
                Order.needs_manual_review))))
            reasons = Counter(
                " ".join((reason or "").split()[:4]) for reason in uow.session.scalars(
                    select(Order.reason).where(Order.state.in_(["REJECTED", "FAILED"])
                                               | Order.needs_manual_review)))
            events = len(list(uow.session.scalars(select(EventRecord.seq))))
        kinds = Counter(r["kind"] for r in sent)
        outcomes = Counter(r["outcome"] for r in sent)
        timings["total"] = time.monotonic() - began
        return ChaosReport(
            seed=cfg.seed,
            signals={"sent": len(sent), "accepted": len(accepted),
                     "client_invalid": outcomes["invalid"], "gave_up": outcomes["gave_up"],
                     "repeats": kinds["repeat"], "raw_malformed": kinds["raw_bad"],
                     "protective": kinds["protective"], "cancels": kinds["cancel"]},
            faults=injector.records, orders_by_state=dict(by_state), in_review=review,
            reasons=dict(reasons.most_common(10)),
            brokerage_orders=len(stack.sim.admin.orders()), events=events,
            violations=violations, timings=timings, workdir=str(workdir),
            rss=sampler.summary(), exits=stack.exits)
    finally:
        if sampler is not None:
            sampler.stop()
        for proc in senders:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        if subscriber_thread is not None:
            subscriber_thread.stop()
        stack.close()


def _calm(stack: Stack) -> None:
    """After the faults: no knob left on, Redis up, every worker running and not stopped."""
    assert stack.sim is not None
    stack.sim.admin.clear_faults()
    if not stack.redis.is_running():
        stack.redis.start()
    if stack.rabbitmq is not None and not stack.rabbitmq.is_running():
        stack.rabbitmq.start()
    for i, beat in enumerate(stack.beats):
        if beat.proc is None or beat.proc.poll() is not None:
            stack.say(f"[chaos] the beat had exited ({beat.proc and beat.proc.returncode}): "
                      "restarting it")
            stack.beats[i] = stack.new_beat(f"beat-again-{i}")
    for i, worker in enumerate(stack.workers):
        for pid in worker.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if worker.proc is None or worker.proc.poll() is not None:
            stack.workers[i] = stack.new_worker(i)


def _orders_recorded(stack: Stack) -> int:
    assert stack.db is not None
    with stack.db.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(Order)) or 0)


def _last_error(log: str) -> str:
    """The last CRITICAL or ERROR line of a log, shortened."""
    lines = [line for line in log.splitlines()[-400:] if " CRITICAL " in line or " ERROR " in line]
    return lines[-1].split(" ", 3)[-1][:200] if lines else "no error logged"


def _wait_settled(db: Database, coids: set[str], bound_s: float,
                  tick: Callable[[], None] = lambda: None) -> dict[str, str]:
    """Wait until each order is terminal or in review; returns the ones that are not."""
    terminal = {s.value for s in TERMINAL_STATES}
    deadline = time.monotonic() + bound_s
    while True:
        with db.unit_of_work() as uow:
            rows = dict(uow.session.execute(
                select(Order.client_order_id, Order.state).where(
                    Order.state.in_(terminal) | Order.needs_manual_review)).all())
        missing = {c: rows.get(c, "never recorded") for c in coids if c not in rows}
        if not missing or time.monotonic() > deadline:
            if missing:
                with db.unit_of_work() as uow:
                    states = dict(uow.session.execute(select(
                        Order.client_order_id, Order.state).where(
                        Order.client_order_id.in_(list(missing)))).all())
                missing = {c: states.get(c, "never recorded") for c in missing}
            return missing
        tick()
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.system.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", type=int, default=300)
    parser.add_argument("--faults", type=int, default=12)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="a sweep: this many consecutive seeds from --seed, one after another")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--broker", choices=("redis", "amqp"),
                        default=os.environ.get("ARBITER_TEST_BROKER", "redis"),
                        help="Celery's broker: the private Redis, or a private RabbitMQ node "
                             "(default: $ARBITER_TEST_BROKER, else redis)")
    parser.add_argument("--rate", type=float, default=6.0, help="signals per second")
    parser.add_argument("--settle-bound", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None,
                        help="the report as JSON (a sweep: one list of reports)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="logs and data (kept; a sweep: one folder per seed inside)")
    args = parser.parse_args(argv)
    first = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    reports: list[ChaosReport] = []
    failed: list[int] = []
    for seed in range(first, first + max(1, args.seeds)):
        workdir = args.workdir
        if workdir is not None and args.seeds > 1:
            workdir = workdir / f"seed-{seed}"
        cfg = ChaosConfig(signals=args.signals, faults=args.faults, seed=seed,
                          workers=args.workers, send_rate=args.rate, broker=args.broker,
                          settle_bound_s=args.settle_bound, workdir=workdir,
                          say=lambda line: print(line, flush=True))  # live in a log file too
        try:
            report = run_chaos(cfg)
        except Exception as exc:  # the runner's own failure (say, the stack would not start)
            print(f"chaos run, seed {seed}: the runner failed: {exc!r}", flush=True)
            failed.append(seed)
            continue
        reports.append(report)
        print(report.format(), flush=True)
        if args.json:
            data = [r.to_json() for r in reports] if args.seeds > 1 else report.to_json()
            args.json.write_text(json.dumps(data, indent=2, default=str))
    if args.seeds > 1:
        print(f"\nsweep of {args.seeds} seeds from {first}: {len(reports)} reports, "
              f"{sum(not r.violations for r in reports)} clean"
              + (f"; the runner failed on seeds {failed}" if failed else ""))
        for r in reports:
            print(f"  seed {r.seed}: {len(r.faults)} faults, {r.signals['accepted']} accepted, "
                  f"{len(r.violations)} violations, {r.timings['total']:.0f}s")
    return 1 if failed or any(r.violations for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
