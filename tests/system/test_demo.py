"""`arbiter demo` and `arbiter up` as a user runs them: subprocesses in a fresh folder, with no
database or Redis URL configured (embedded Postgres and Redis)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from arbiter.embedded import EmbeddedPostgres, EmbeddedRedis
from arbiter.stack import CREDENTIALS_FILE, ENV_FILE, PID_FILE, read_env_file
from db.engine import Database
from db.models import ConflictLog, Order, Strategy
from tests.fixtures.simulator import REPO_ROOT, Simulator, wait_for

pytestmark = pytest.mark.system


def user_env() -> dict[str, str]:
    """A shell with nothing of Arbiter's configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "FLOWER_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "120"
    return env


def arbiter(*args: str) -> list[str]:
    return [sys.executable, "-m", "arbiter.cli", *args]


def processes_using(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line mentions `folder` (our children all do)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status", "cwd"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except psutil.Error:
            continue
        if str(folder) in text and proc.pid != os.getpid():
            found.append(proc)
    return found


@pytest.fixture
def workdir(service_tmp_dir: Path) -> Iterator[Path]:
    """The user's current folder; the demo's data lands in `<workdir>/.arbiter`."""
    yield service_tmp_dir
    for proc in processes_using(service_tmp_dir):  # never leak a server into the next test
        proc.kill()
    EmbeddedPostgres(service_tmp_dir / ".arbiter" / "postgres").remove()
    EmbeddedRedis(service_tmp_dir / ".arbiter" / "redis").remove()


def test_demo_json_agrees_with_the_database_and_the_simulator(workdir: Path) -> None:
    done = subprocess.run(arbiter("demo", "--signals", "200", "--json"), cwd=workdir,
                          env=user_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)  # stdout holds the one JSON object and nothing else
    data_dir = workdir / ".arbiter"

    assert summary["signals"] == summary["orders"] == 200
    assert summary["duplicate_client_order_ids"] == 0
    assert set(summary["orders_by_state"]) <= {"FULLY_FILLED", "REJECTED", "CANCELLED", "FAILED"}
    assert {sc["scenario"]: sc["resolution"] for sc in summary["scenarios"]} == {
        "blocked": "blocked", "override": "priority_override", "own": "allowed"}
    assert summary["ownership"]["TSLA"]["strategy"] == "long_term"
    assert summary["signals_per_s"] > 0
    assert summary["events_by_type"]["signal_received"] == 200
    # Everything it started is gone, and it left no stale pid or env file.
    assert processes_using(data_dir) == []
    assert not (data_dir / PID_FILE).exists() and not (data_dir / ENV_FILE).exists()
    assert not EmbeddedPostgres(data_dir / "postgres").pid_file.exists()

    # The database (started again on the demo's own data) says the same.
    postgres = EmbeddedPostgres(data_dir / "postgres")
    postgres.start()
    database = Database(postgres.url, pool_size=1)
    try:
        mine = Order.signal_id.like(f"{summary['run_id']}-%")
        with database.unit_of_work() as uow:
            s = uow.session
            states = dict(s.execute(select(Order.state, func.count()).where(mine)
                                    .group_by(Order.state)).all())  # fmt: skip
            conflicts = list(s.scalars(select(ConflictLog).join(Order).where(
                mine, ConflictLog.requesting_strategy_id != ConflictLog.owning_strategy_id)))
            sent = select(Order.client_order_id).where(mine, Order.brokerage_order_id.isnot(None))
            coids = set(s.scalars(sent))
        assert states == summary["orders_by_state"]
        assert Counter((c.ticker, c.resolution, c.reasoning) for c in conflicts) == Counter(
            (c["ticker"], c["resolution"], c["reasoning"]) for c in summary["conflicts"])
        assert all(c.reasoning for c in conflicts)
    finally:
        database.dispose()
        postgres.stop()

    # The simulator's own records: one order per client_order_id, the ones Arbiter sent.
    sim = Simulator(data_dir / "brokersim", {}).start()
    try:
        at_brokerage = [o["client_order_id"] for o in sim.admin.orders()]
    finally:
        sim.close()
    assert len(at_brokerage) == len(set(at_brokerage)) == summary["brokerage_orders"]
    assert set(at_brokerage) == coids


def _up(workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(arbiter("up"), cwd=workdir, env=user_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_up(proc: subprocess.Popen[str], data_dir: Path) -> dict[str, str]:
    def ready() -> dict[str, str] | None:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        return read_env_file(data_dir) or None

    return wait_for(ready, timeout=120, interval=0.2)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    return output


def test_up_stops_everything_on_sigterm_and_a_second_up_reuses_the_folder(
    workdir: Path,
) -> None:
    data_dir = workdir / ".arbiter"
    first = _up(workdir)
    try:
        urls = _wait_up(first, data_dir)
        family = psutil.Process(first.pid).children(recursive=True)
        pid_files = [EmbeddedPostgres(data_dir / "postgres").pid_file,
                     EmbeddedRedis(data_dir / "redis").pid_file]
        servers = [int(p.read_text().split()[0]) for p in pid_files]
        assert {"worker", "beat", "stream", "flower", "simulator", "web"} <= {
            p.stem for p in (data_dir / "logs").glob("*.log")}
        web = urls["ARBITER_WEB_URL"]
        assert httpx.get(f"{web}/healthz", timeout=10).json()["status"] == "ok"
        assert httpx.get(f"{web}/api/v1/strategies", timeout=10).status_code == 401
        assert oct((data_dir / CREDENTIALS_FILE).stat().st_mode & 0o777) == "0o600"
        credentials = (data_dir / CREDENTIALS_FILE).read_text()
    finally:
        output = _stop(first)
    assert "Flower login generated once" in output
    assert credentials.strip().partition(":")[2] not in output  # never printed
    _, alive = psutil.wait_procs(family + [psutil.Process(pid) for pid in servers
                                           if psutil.pid_exists(pid)], timeout=10)
    assert alive == [] and processes_using(data_dir) == []
    for leftover in (data_dir / PID_FILE, data_dir / ENV_FILE, *pid_files):
        assert not leftover.exists(), leftover

    second = _up(workdir)
    try:
        again = _wait_up(second, data_dir)
        database = Database(again["ARBITER_DATABASE_URL"], pool_size=1)
        try:
            with database.unit_of_work() as uow:
                assert uow.session.scalar(select(func.count()).select_from(Strategy)) == 4
        finally:
            database.dispose()
    finally:
        output = _stop(second)
    # The same folder: data, port and Flower credentials are reused, nothing printed twice.
    assert again["ARBITER_DATABASE_URL"] == urls["ARBITER_DATABASE_URL"]
    assert (data_dir / CREDENTIALS_FILE).read_text() == credentials
    assert "Flower login generated once" not in output
    assert processes_using(data_dir) == []


def test_a_second_up_on_a_busy_folder_is_refused(workdir: Path) -> None:
    data_dir = workdir / ".arbiter"
    data_dir.mkdir()
    (data_dir / PID_FILE).write_text(f"{os.getpid()}\n")  # this test process plays the owner
    started = time.monotonic()
    done = subprocess.run(arbiter("up"), cwd=workdir, env=user_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "already runs" in done.stdout + done.stderr, (done.stdout, time.monotonic() - started)
    assert (data_dir / PID_FILE).exists()  # not ours to remove
