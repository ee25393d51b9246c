"""Flower as `arbiter up` runs it: basic auth from the environment, no anonymous API."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from arbiter.embedded import free_port
from arbiter.supervisor import Child, http_ready
from tests.fixtures.simulator import REPO_ROOT

pytestmark = pytest.mark.system


@pytest.fixture
def flower(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, tuple[str, str]]]:
    user, password = "ops", secrets.token_urlsafe(12)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "FLOWER_"))}
    env.update(ARBITER_REDIS_URL=redis_url, FLOWER_BASIC_AUTH=f"{user}:{password}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])))
    url = f"http://127.0.0.1:{port}"
    child = Child("flower", [sys.executable, "-m", "celery", "-A", "tasks", "flower",
                             "--address=127.0.0.1", f"--port={port}"],
                  env, tmp_path / "flower.log", http_ready(f"{url}/healthcheck"), cwd=REPO_ROOT)
    child.start(timeout=60)
    try:
        yield url, (user, password)
    finally:
        child.stop()
        assert password not in child.log_text()


def test_flower_api_needs_the_credentials(flower: tuple[str, tuple[str, str]]) -> None:
    url, credentials = flower
    assert httpx.get(f"{url}/api/workers", timeout=10).status_code == 401
    assert httpx.get(f"{url}/api/workers", auth=("ops", "wrong"), timeout=10).status_code == 401
    assert httpx.get(f"{url}/api/workers", auth=credentials, timeout=30).status_code == 200
