"""`arbiter web` as `arbiter up` starts it: loopback only, every route but /healthz behind a
token, and no token in its log after sign-ins and API calls."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from arbiter.stack import Stack
from core.settings import Settings
from db.engine import Database
from tests.fixtures.web import Tokens

pytestmark = pytest.mark.system


@pytest.fixture
def web_of_the_stack(db: Database, service_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    settings = Settings(**{k.removeprefix("ARBITER_").lower(): v for k, v in service_env.items()})
    stack = Stack(settings, tmp_path / "data", say=lambda _: None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env.update(service_env, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    stack.data_dir.mkdir(parents=True)
    try:
        stack._start_web(env)
        yield stack
    finally:
        stack.supervisor.stop()


def test_web_listens_on_loopback_only_and_logs_no_token(
    web_of_the_stack: Stack, tokens: Tokens
) -> None:
    stack = web_of_the_stack
    assert stack.web_url is not None
    (child,) = stack.supervisor.children
    assert child.pid is not None
    family = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    listening = [c.laddr for p in family for c in p.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]  # fmt: skip
    assert listening and all(ipaddress.ip_address(a.ip).is_loopback for a in listening)
    http = httpx.Client(base_url=stack.web_url, timeout=10)
    assert http.get("/healthz").status_code == 200
    assert http.get("/api/v1/orders").status_code == 401
    assert http.get("/api/v1/orders", headers=tokens.headers("read")).status_code == 200
    assert http.post("/login", data={"token": "arb_not-a-real-token"}).status_code == 401
    assert http.post("/login", data={"token": tokens.admin}).status_code == 303
    assert http.get("/metrics", headers=tokens.headers("read")).status_code == 200
    http.close()
    log = child.log_text()
    assert "GET /api/v1/orders" in log  # the access log is there ...
    for token in (tokens.read, tokens.trade, tokens.admin, "arb_not-a-real-token"):
        assert token not in log  # ... and no token in it
