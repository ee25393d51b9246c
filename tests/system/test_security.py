"""Security checks on the running pieces: Flower as `arbiter up` starts it (credentials needed,
loopback only), the simulator's API keys, no secret in any log. JSON-only Celery (a pickle
message is refused, never executed) is tested in tests/system/test_bad_input.py
(`test_a_pickle_message_is_refused_never_executed`)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from arbiter.stack import Stack
from core.settings import Settings
from db.engine import Database
from strategy_client.client import SignalClient
from tests.fixtures.keys import db_keys
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.simulator import DEFAULT_OPTIONS, Simulator
from tests.system.helpers import wait_terminal

pytestmark = pytest.mark.system


@pytest.fixture
def flower_of_the_stack(redis_url: str, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    """Flower started by arbiter.stack.Stack's own code path, with its default address."""
    password = secrets.token_urlsafe(12)
    settings = Settings(redis_url=redis_url, flower_user="ops", flower_password=password)
    stack = Stack(settings, tmp_path / "data", say=lambda _: None)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "FLOWER_"))}
    env.update(ARBITER_REDIS_URL=redis_url, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    stack.data_dir.mkdir(parents=True)
    try:
        stack._start_flower(env)
        yield stack, password
    finally:
        stack.supervisor.stop()


def test_flower_listens_on_loopback_only_and_refuses_anonymous_api_calls(
    flower_of_the_stack: tuple[Stack, str],
) -> None:
    stack, password = flower_of_the_stack
    assert stack.flower_url is not None
    (child,) = stack.supervisor.children
    assert child.pid is not None
    family = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    listening = [c.laddr for p in family for c in p.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening, "Flower listens nowhere?"
    assert all(ipaddress.ip_address(addr.ip).is_loopback for addr in listening), listening
    api = f"{stack.flower_url}/api/workers"
    assert httpx.get(api, timeout=10).status_code == 401
    assert httpx.get(api, auth=("ops", "guess"), timeout=10).status_code == 401
    assert httpx.get(api, auth=("ops", password), timeout=30).status_code == 200
    assert password not in child.log_text()


@pytest.mark.parametrize("path", ["/v2/account", "/v2/orders", "/v2/positions", "/admin/faults"])
def test_the_simulator_wants_its_api_keys(simulator: Simulator, path: str) -> None:
    url = simulator.url + path
    assert httpx.get(url, timeout=10).status_code == 401
    only_key = {"APCA-API-KEY-ID": simulator.key}
    assert httpx.get(url, headers=only_key, timeout=10).status_code == 401
    wrong = {"APCA-API-KEY-ID": simulator.key, "APCA-API-SECRET-KEY": "not-the-secret"}
    assert httpx.get(url, headers=wrong, timeout=10).status_code == 403
    right = {**only_key, "APCA-API-SECRET-KEY": simulator.secret}
    assert httpx.get(url, headers=right, timeout=10).status_code == 200


def test_no_brokerage_secret_reaches_any_log(
    db: Database,
    redis_url: str,
    arbiter_env: dict[str, str],
    start_worker: Callable[..., CeleryProcess],
    tmp_path: Path,
) -> None:
    key, secret = f"PKCHAOS{secrets.token_hex(6).upper()}", f"sk-{secrets.token_urlsafe(24)}"
    sim = Simulator(tmp_path / "keyed-sim", dict(DEFAULT_OPTIONS), key=key, secret=secret)
    sim.start()
    keyed = {"ARBITER_BROKERAGE_URL": sim.url, "ARBITER_BROKERAGE_KEY": key,
             "ARBITER_BROKERAGE_SECRET": secret}
    beat = CeleryProcess(["beat", "-l", "DEBUG", "-s", str(tmp_path / "beat-schedule")],
                         {**arbiter_env, **keyed}, tmp_path / "beat.log", ready="beat: Starting")
    try:
        # Error paths log the most: a 5xx and a garbage answer on the way.
        sim.admin.set_faults(error_count=2, garbage_count=1)
        worker = start_worker("keyed", extra_env={**keyed, "ARBITER_LOG_LEVEL": "DEBUG"})
        beat.start()
        client = SignalClient(redis_url, keys=db_keys(db))
        coids = [client.submit_signal("trading", t, "buy", 1, signal_id=f"sec-{t}")
                 for t in ("AAPL", "MSFT", "IBM")]
        wait_terminal(db, coids, timeout=90)
        logs = {path: path.read_text(errors="replace") for path in
                [worker.log_path, beat.log_path, sim.log_path, *tmp_path.rglob("*.log")]}
        assert len(logs) >= 3
        for path, text in logs.items():
            assert key not in text, f"brokerage key in {path}"
            assert secret not in text, f"brokerage secret in {path}"
    finally:
        beat.stop()
        sim.close()
