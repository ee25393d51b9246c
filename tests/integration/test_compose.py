"""docker-compose.yml: postgres, redis, migrate, worker, beat, flower and the simulator, wired
and guarded, with no secret defaults."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
APP_SERVICES = ("migrate", "worker", "notifier", "beat", "stream", "flower", "simulator", "web")
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "ARBITER_BROKERAGE_KEY",
           "ARBITER_BROKERAGE_SECRET", "ARBITER_FLOWER_USER", "ARBITER_FLOWER_PASSWORD")
FILLED_IN = {name: f"test-{name.lower()}" for name in SECRETS}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def test_every_service_is_there(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", "rabbitmq", *APP_SERVICES}


def test_rabbitmq_is_an_opt_in_broker(services: dict[str, Any]) -> None:
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["profiles"] == ["rabbitmq"]
    assert "rabbitmq-diagnostics" in str(rabbitmq["healthcheck"]["test"])
    assert all(port.startswith("127.0.0.1:") for port in rabbitmq.get("ports", []))
    for name in ("worker", "beat", "flower"):
        assert services[name]["environment"]["ARBITER_BROKER_URL"] == "${ARBITER_BROKER_URL:-}"


def test_app_services_share_one_image_built_from_the_dockerfile(
    services: dict[str, Any],
) -> None:
    assert {services[s]["image"] for s in APP_SERVICES} == {"arbiter:local"}
    assert all(services[s]["build"] == "." for s in APP_SERVICES)
    assert "FROM python:3.11-slim" in (ROOT / "Dockerfile").read_text()


def test_app_services_wait_for_the_migration(services: dict[str, Any]) -> None:
    assert services["migrate"]["command"] == ["arbiter", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "notifier", "beat", "stream", "flower", "web"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_healthchecks(services: dict[str, Any]) -> None:
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    assert "ping" in str(services["redis"]["healthcheck"]["test"])
    assert "/healthz" in str(services["simulator"]["healthcheck"]["test"])
    assert "0.0.0.0" in services["simulator"]["command"]
    assert "/healthz" in str(services["web"]["healthcheck"]["test"])


def test_web_is_published_on_the_host_loopback_only(services: dict[str, Any]) -> None:
    assert services["web"]["command"][:2] == ["arbiter", "web"]
    assert all(str(port).startswith("127.0.0.1:") for port in services["web"]["ports"])


def test_redis_keeps_every_message(services: dict[str, Any]) -> None:
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command


def test_redis_needs_a_password_that_every_app_service_uses(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "requirepass" in " ".join(redis["command"])
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    assert redis["user"] == "redis"
    for name in APP_SERVICES:
        url = services[name]["environment"]["ARBITER_REDIS_URL"]
        assert url.startswith("redis://:${REDIS_PASSWORD:?"), (name, url)


def test_nothing_waits_for_the_simulator_which_runs_only_in_its_profile(
    services: dict[str, Any],
) -> None:
    assert services["simulator"]["profiles"] == ["simulator"]
    for name, service in services.items():
        assert "simulator" not in (service.get("depends_on") or {}), name
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^COMPOSE_PROFILES=simulator$", example, re.M)


def test_workers_scale_and_beat_is_single(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "signals,orders,maintenance" in worker["command"]
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    # Two trade stream consumers: one holds the account's lease, the other stands by.
    assert services["stream"]["command"] == ["arbiter", "stream"]
    assert services["stream"]["deploy"]["replicas"] == 2


def test_flower_is_on_loopback_with_auth_from_the_environment(services: dict[str, Any]) -> None:
    flower = services["flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    auth = flower["environment"]["FLOWER_BASIC_AUTH"]
    assert "${ARBITER_FLOWER_USER:?" in auth and "${ARBITER_FLOWER_PASSWORD:?" in auth


def test_no_secret_has_a_default() -> None:
    text = COMPOSE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, name
        assert all(use.startswith(":?") for use in uses), (name, uses)
    example = (ROOT / ".env.example").read_text()
    for name in SECRETS:
        assert re.search(rf"^{name}=$", example, re.M), f"{name} must be empty in .env.example"


def _compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def _config(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed")
    empty = tmp_path / "empty.env"  # a developer's own .env must not leak into the test
    empty.write_text("")
    base = {k: v for k, v in os.environ.items()
            if k not in SECRETS and not k.startswith("ARBITER_")}
    command = [*binary, "-f", str(COMPOSE), "--env-file", str(empty), "config"]
    return subprocess.run(command, cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                          timeout=60)


def test_compose_config_is_valid_when_the_secrets_are_set(tmp_path: Path) -> None:
    done = _config(FILLED_IN, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test-arbiter_flower_password" in done.stdout


def test_compose_config_refuses_to_run_without_the_secrets(tmp_path: Path) -> None:
    done = _config({k: v for k, v in FILLED_IN.items() if k != "ARBITER_FLOWER_PASSWORD"},
                   tmp_path)
    assert done.returncode != 0
    assert "set it in .env" in done.stderr
