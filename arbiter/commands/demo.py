"""`arbiter demo`: four strategy processes, the three conflict scenarios, and a summary.

Uses a running `arbiter up` on the same data folder when there is one; otherwise it brings up
the same stack itself (embedded Postgres and Redis unless URLs are configured) and stops it on
exit, Ctrl-C included.
"""

from __future__ import annotations

import multiprocessing
import queue
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select, text

from arbiter import demo_strategies
from arbiter.commands import common
from arbiter.embedded import postgres_reachable, redis_reachable
from arbiter.stack import Stack, data_dir_of, owner_pid, read_env_file
from arbiter.supervisor import ChildFailed, Shutdown, signals_ignored, sigterm_as_shutdown
from bootstrap import bootstrap
from core.errors import OperationalError
from core.settings import Settings
from core.states import TERMINAL_STATES
from db.engine import Database
from db.models import Base, ConflictLog, EventRecord, Order, Position, TickerOwnership
from db.strategies import signing_keys

SEED = 7
SETTLE_TIMEOUT_S = 120.0
KEEP_TABLES = {"strategies", "system_flags"}  # --fresh keeps strategies and the kill switch
DEMO_ENV = {"ARBITER_RECONCILE_INTERVAL_S": "2", "ARBITER_RELAY_INTERVAL_S": "1"}
EXPECTED = {"blocked": "blocked", "override": "priority_override", "own": "allowed"}
SCENARIO_TEXT = {
    "blocked": "trading sells 10 NVDA that long_term owns (locked 90 days)",
    "override": "long_term buys 100 TSLA that trading owns (no lock)",
    "own": "long_term sells 50 AAPL, its own position",
}


class DemoFailed(OperationalError):
    pass


@dataclass
class Progress:
    plan_size: int
    sent: Counter[str] = field(default_factory=Counter)
    coids: list[str] = field(default_factory=list)
    setup_done: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    states: dict[str, int] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)
    first_sent: float | None = None

    def drain(self, updates: Any) -> None:
        while True:
            try:
                kind, strategy, coid = updates.get_nowait()
            except queue.Empty:
                return
            if kind == "sent":
                self.sent[strategy] += 1
                self.coids.append(coid)
                self.first_sent = self.first_sent or time.monotonic()
            elif kind == "setup-done":
                self.setup_done.add(strategy)
            elif kind == "done":
                self.done.add(strategy)

    def view(self, phase: str) -> Group:
        sent = Table(title=f"signals sent ({sum(self.sent.values())}/{self.plan_size})",
                     title_justify="left")  # fmt: skip
        for name in demo_strategies.STRATEGIES:
            sent.add_column(name, justify="right")
        sent.add_row(*(str(self.sent[n]) for n in demo_strategies.STRATEGIES))
        states = Table(title="orders by state", title_justify="left")
        for state in sorted(self.states):
            states.add_column(state, justify="right")
        states.add_row(*(str(self.states[s]) for s in sorted(self.states)))
        conflicts = ", ".join(f"{k} {v}" for k, v in sorted(self.conflicts.items())) or "none yet"
        return Group(f"[bold]{phase}[/bold]", sent, states, f"conflicts: {conflicts}")


def _run_orders(prefix: str) -> Any:
    return select(Order.id).where(Order.signal_id.like(f"{prefix}-%"))


def poll(database: Database, prefix: str, progress: Progress) -> tuple[int, int]:
    """Refresh the counts; returns (orders recorded, orders still moving)."""
    with database.unit_of_work() as uow:
        s = uow.session
        rows = s.execute(
            select(Order.state, Order.needs_manual_review, func.count())
            .where(Order.signal_id.like(f"{prefix}-%"))
            .group_by(Order.state, Order.needs_manual_review)
        ).all()
        conflicts = s.execute(
            select(ConflictLog.resolution, func.count())
            .where(ConflictLog.order_id.in_(_run_orders(prefix)),
                   ConflictLog.requesting_strategy_id != ConflictLog.owning_strategy_id)
            .group_by(ConflictLog.resolution)
        ).all()
    states: Counter[str] = Counter()
    moving = 0
    for state, review, count in rows:
        states[state] += count
        if state not in TERMINAL_STATES and not review:
            moving += count
    progress.states = dict(states)
    progress.conflicts = {resolution: count for resolution, count in conflicts}
    return sum(states.values()), moving


def _has_orders(database: Database) -> bool:
    with database.unit_of_work() as uow:
        return uow.session.scalar(select(Order.id).limit(1)) is not None


def truncate(database: Database) -> None:
    """Empty the order store (ids keep counting, so stale queued messages match nothing)."""
    names = [t.name for t in Base.metadata.sorted_tables if t.name not in KEEP_TABLES]
    with database.unit_of_work() as uow:
        uow.session.execute(text(f"TRUNCATE {', '.join(names)} CASCADE"))
        uow.commit()


def brokerage_counts(settings: Settings, url: str, coids: set[str]) -> tuple[int | None, int]:
    """(orders of this run at the simulator, duplicated client_order_ids there); (None, 0)
    when the brokerage is not the simulator."""
    headers = {"APCA-API-KEY-ID": settings.brokerage_key,
               "APCA-API-SECRET-KEY": settings.brokerage_secret}  # fmt: skip
    try:
        response = httpx.get(f"{url.rstrip('/')}/admin/orders", headers=headers, timeout=10)
    except httpx.HTTPError:
        return None, 0
    if response.status_code != 200:
        return None, 0
    seen = [o["client_order_id"] for o in response.json()]
    return sum(c in coids for c in seen), len(seen) - len(set(seen))


def collect(database: Database, prefix: str, started: datetime) -> dict[str, Any]:
    with database.unit_of_work() as uow:
        s = uow.session
        run_orders = _run_orders(prefix)
        orders = list(s.scalars(select(Order).where(Order.signal_id.like(f"{prefix}-%"))))
        by_signal = {o.signal_id: o for o in orders}
        decisions = [
            {"ticker": c.ticker, "requesting_strategy": c.requesting_strategy.name,
             "owning_strategy": c.owning_strategy.name, "action": c.action,
             "resolution": c.resolution, "reasoning": c.reasoning, "order_id": c.order_id}
            for c in s.scalars(select(ConflictLog).where(ConflictLog.order_id.in_(run_orders))
                               .order_by(ConflictLog.id))
        ]  # fmt: skip
        # Conflicts proper: another strategy owns the ticker. The rest are owners' own trades.
        conflicts = [c for c in decisions if c["requesting_strategy"] != c["owning_strategy"]]
        ownership = {
            o.ticker: {"strategy": o.strategy.name, "locked_until": o.locked_until}
            for o in s.scalars(select(TickerOwnership).where(
                TickerOwnership.released_at.is_(None)
            ).order_by(TickerOwnership.ticker))
        }  # fmt: skip
        positions: dict[str, dict[str, str]] = {}
        for p in s.scalars(select(Position).where(Position.quantity != 0)
                           .order_by(Position.ticker)):  # fmt: skip
            quantity = format(p.quantity.normalize(), "f")
            positions.setdefault(p.strategy.name, {})[p.ticker] = quantity
        events = s.execute(
            select(EventRecord.type, func.count())
            .where((EventRecord.order_id.in_(run_orders))
                   | (EventRecord.order_id.is_(None) & (EventRecord.occurred_at >= started)))
            .group_by(EventRecord.type)
        ).all()  # fmt: skip
    scenarios = []
    for key, description in SCENARIO_TEXT.items():
        order = by_signal.get(f"{prefix}-scenario-{key}")
        entry = next((c for c in decisions if order and c["order_id"] == order.id), None)
        scenarios.append({
            "scenario": key, "description": description,
            "order_state": order.state if order else None,
            "expected": EXPECTED[key],
            "resolution": entry["resolution"] if entry else None,
            "reasoning": entry["reasoning"] if entry else (order.reason if order else None),
        })  # fmt: skip
    return {
        "orders": len(orders),
        "orders_by_state": dict(sorted(Counter(o.state for o in orders).items())),
        "in_review": sum(o.needs_manual_review for o in orders),
        "conflicts": conflicts,
        "conflicts_by_resolution": dict(Counter(c["resolution"] for c in conflicts)),
        "owner_decisions": len(decisions) - len(conflicts),
        "scenarios": scenarios,
        "ownership": ownership,
        "positions": positions,
        "events_by_type": dict(sorted(events, key=lambda e: (-e[1], e[0]))),
    }


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    console.rule("[bold]Arbiter demo: what happened")
    console.print(f"{summary['signals']} signals from 4 strategy processes became "
                  f"{summary['orders']} orders in {summary['duration_s']}s "
                  f"({summary['signals_per_s']} signals/s end to end).")
    states = Table("state", "orders", title="Orders by state (every order ends in one of the "
                   "final states, or waits in the manual-review queue)", title_justify="left")
    for state, count in summary["orders_by_state"].items():
        states.add_row(state, str(count))
    states.add_row("in manual review", str(summary["in_review"]))
    console.print(states)
    scenarios = Table("scenario", "expected", "resolution", "order", "reasoning",
                      title="The three conflict scenarios", title_justify="left")
    for sc in summary["scenarios"]:
        style = "green" if sc["resolution"] == sc["expected"] else "red"
        scenarios.add_row(sc["description"], sc["expected"],
                          Text(common.cell(sc["resolution"]), style=style),
                          common.plain(sc["order_state"]), common.plain(sc["reasoning"]))
    console.print(scenarios)
    by_res = ", ".join(f"{k}: {v}" for k, v in summary["conflicts_by_resolution"].items())
    others = Table("ticker", "requested by", "owned by", "resolution", "reasoning",
                   title=f"Conflicts between strategies ({by_res or 'none'}; first 12 shown). "
                   f"Owners trading their own tickers: {summary['owner_decisions']} allowed.",
                   title_justify="left")
    for c in summary["conflicts"][:12]:
        others.add_row(*(common.plain(c[k]) for k in (
            "ticker", "requesting_strategy", "owning_strategy", "resolution", "reasoning")))
    console.print(others)
    owners = Table("ticker", "owner", "locked until", title="Ownership map", title_justify="left")
    for ticker, owner in summary["ownership"].items():
        owners.add_row(common.plain(ticker), common.plain(owner["strategy"]),
                       common.plain(owner["locked_until"]))
    console.print(owners)
    positions = Table("strategy", "positions", title="Positions per strategy",
                      title_justify="left")
    for strategy, held in summary["positions"].items():
        positions.add_row(common.plain(strategy),
                          common.plain(", ".join(f"{t} {q}" for t, q in held.items())))
    console.print(positions)
    events = ", ".join(f"{k} {v}" for k, v in summary["events_by_type"].items())
    console.print(f"[bold]Events[/bold] ({sum(summary['events_by_type'].values())}): {events}",
                  soft_wrap=False)
    console.print(f"Brokerage: {summary['brokerage_orders']} orders received, "
                  f"{summary['duplicate_client_order_ids']} duplicate client_order_ids.")
    console.print("Look around: arbiter orders | arbiter conflicts | arbiter ownership | "
                  "arbiter events list  (while `arbiter up` runs)")


def _attach(settings: Settings, say: Any) -> dict[str, str] | None:
    """The URLs of a live `arbiter up` on this data folder, if it answers."""
    data_dir = data_dir_of(settings)
    values = read_env_file(data_dir)
    if owner_pid(data_dir) is None or not values:
        return None
    db_url, redis_url = values.get("ARBITER_DATABASE_URL"), values.get("ARBITER_REDIS_URL")
    if db_url and redis_url and postgres_reachable(db_url) and redis_reachable(redis_url):
        say(f"using the running `arbiter up` (pid {owner_pid(data_dir)}) on {data_dir}")
        return values
    return None


def demo(
    signals: Annotated[int, typer.Option("--signals", min=demo_strategies.MIN_SIGNALS,
                                         help="how many signals in all")] = 200,
    as_json: common.AsJson = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="start from an empty order store "
                                        "(strategies are kept)")] = False,
    seed: Annotated[int, typer.Option(help="seed for the signal plan")] = SEED,
) -> None:
    """Run the four default strategies as separate processes against Arbiter, including the
    three conflict scenarios, and summarise what happened."""
    out = Console(stderr=True) if as_json else common.console
    say = (lambda m: out.print(m, highlight=False))  # noqa: E731
    settings = common.settings(env_file_fallback=False)
    stack: Stack | None = None
    code = 0
    with sigterm_as_shutdown():
        try:
            attached = _attach(settings, say)
            if attached is None:
                stack = Stack(settings, data_dir_of(settings), say=say, child_env=DEMO_ENV,
                              fresh_simulator=fresh)  # fmt: skip
                stack.start(flower=False)
                urls = stack.urls()
            else:
                urls = attached
            summary = run(settings, urls, signals, seed, fresh, out, as_json)
            if as_json:
                common.print_json(summary)
            else:
                print_summary(out, summary)
            if summary["duplicate_client_order_ids"]:
                code = 1
        except (KeyboardInterrupt, Shutdown):
            say("interrupted; stopping")
            code = 130
        except (ChildFailed, OperationalError) as exc:
            common.err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            code = 1
        finally:
            if stack is not None:
                with signals_ignored():
                    stack.stop()
    raise typer.Exit(code)


def run(settings: Settings, urls: dict[str, str], total: int, seed: int, fresh: bool,
        out: Console, quiet: bool) -> dict[str, Any]:
    rt = bootstrap(settings.model_copy(update={"database_url": urls["ARBITER_DATABASE_URL"]}),
                   application_name="arbiter-demo", pool_size=2)
    database = rt.database
    try:
        if fresh:
            truncate(database)
        elif _has_orders(database):
            out.print("[yellow]note:[/yellow] the order store holds earlier orders and owners, so "
                      "the three scenarios may not read as in an empty store: try --fresh")
        run_id = f"demo-{datetime.now(UTC):%H%M%S}-{secrets.token_hex(2)}"
        plans = demo_strategies.plan(total, seed, run_id)
        with database.unit_of_work() as uow:
            keys = signing_keys(uow.session)  # each strategy process signs with its own key
        started_at = datetime.now(UTC)
        progress = Progress(total)
        started = time.monotonic()
        context = multiprocessing.get_context("spawn")
        updates = context.Queue()
        go = context.Event()
        workers = [
            context.Process(
                target=demo_strategies.run_strategy, name=f"strategy-{name}", daemon=True,
                args=(name, urls["ARBITER_REDIS_URL"], demo_strategies.as_messages(plan), go,
                      updates, 0.2, keys[name]),
            )
            for name, plan in plans.items()
        ]  # fmt: skip
        for process in workers:
            process.start()
        try:
            with Live(progress.view("starting"), console=out, refresh_per_second=4,
                      transient=quiet) as live:  # fmt: skip
                _drive(database, run_id, progress, go, workers, updates, live)
            out.print()
        finally:
            go.set()
            for process in workers:
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()
        finished = time.monotonic()
        summary = collect(database, run_id, started_at)
    finally:
        rt.close()
    coids = set(progress.coids)
    at_brokerage, duplicates = brokerage_counts(settings, urls["ARBITER_BROKERAGE_URL"], coids)
    elapsed = max(finished - (progress.first_sent or started), 1e-6)
    return {
        "run_id": run_id,
        "signals": len(progress.coids),
        **summary,
        "brokerage_orders": at_brokerage,
        "duplicate_client_order_ids": duplicates,
        "duration_s": round(finished - started, 1),
        "signals_per_s": round(len(progress.coids) / elapsed, 1),
    }


def _drive(database: Database, run_id: str, progress: Progress, go: Any, workers: list[Any],
           updates: Any, live: Live) -> None:
    """Setup, scenarios and stream, then wait (bounded) until every order has settled."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    phase = "setup: long_term buys NVDA and AAPL, trading buys TSLA"
    while time.monotonic() < deadline:
        progress.drain(updates)
        recorded, moving = poll(database, run_id, progress)
        if not go.is_set() and len(progress.setup_done) == len(workers):
            setup = len(progress.coids)
            if recorded >= setup and moving == 0:
                go.set()
                phase = "streaming signals (the three scenarios come early)"
        if len(progress.done) == len(workers):
            phase = "waiting for every order to settle"
            if recorded >= len(progress.coids) and moving == 0:
                live.update(progress.view("done"))
                return
        if not go.is_set() and not any(p.is_alive() for p in workers):
            raise DemoFailed("the strategy processes exited before the setup settled")
        live.update(progress.view(phase))
        time.sleep(0.25)
    raise DemoFailed(f"orders still moving after {SETTLE_TIMEOUT_S:.0f}s: {progress.states}")
