"""`arbiter tokens create|list|revoke` against the real database, and the token it prints
working on the API."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from arbiter.commands.registry import register
from core.settings import get_settings
from db.engine import Database
from db.models import ApiToken


@pytest.fixture
def cli(db: Database, migrated_database_url: str) -> Any:
    get_settings.cache_clear()
    root = typer.Typer()
    register(root)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        env = {"ARBITER_DATABASE_URL": migrated_database_url, "ARBITER_REDIS_URL": None}
        return runner.invoke(root, list(args), env=env, catch_exceptions=False)

    return invoke


def test_create_prints_the_token_once_and_stores_only_its_hash(
    cli: Any, db: Database, api: TestClient
) -> None:
    result = cli("tokens", "create", "grafana", "--scope", "read", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) == {"name", "scope", "token"} and body["scope"] == "read"
    with db.sessions() as session:
        (row,) = session.query(ApiToken).all()
        assert body["token"] not in (row.token_hash, row.name)
        assert len(row.token_hash) == 64
    headers = {"Authorization": f"Bearer {body['token']}"}
    assert api.get("/api/v1/strategies", headers=headers).status_code == 200
    listed = cli("tokens", "list", "--json")
    assert body["token"] not in listed.stdout
    assert [t["name"] for t in json.loads(listed.stdout)] == ["grafana"]
    assert cli("tokens", "revoke", "grafana").exit_code == 0
    assert api.get("/api/v1/strategies", headers=headers).status_code == 401
    assert json.loads(cli("tokens", "list", "--json").stdout) == []


def test_create_refuses_bad_input_with_a_clear_message(cli: Any) -> None:
    assert cli("tokens", "create", "x", "--scope", "root").exit_code == 2
    bad_name = cli("tokens", "create", "has space", "--scope", "read")
    assert bad_name.exit_code == 2 and "token name" in bad_name.output
    unknown = cli("tokens", "create", "bot", "--scope", "trade", "--strategy", "nosuch")
    assert unknown.exit_code == 2 and "unknown strategy" in unknown.output
    read_bound = cli("tokens", "create", "bot", "--scope", "read", "--strategy", "trading")
    assert read_bound.exit_code == 2 and "only a trade token" in read_bound.output
    assert (
        cli("tokens", "create", "bot", "--scope", "trade", "--strategy", "trading").exit_code == 0
    )
    twice = cli("tokens", "create", "bot", "--scope", "read")
    assert twice.exit_code == 2 and "exists" in twice.output
    assert cli("tokens", "revoke", "nobody").exit_code == 2


def test_web_refuses_to_start_without_a_database() -> None:
    get_settings.cache_clear()
    root = typer.Typer()
    register(root)
    result = CliRunner().invoke(
        root, ["web"], env={"ARBITER_DATABASE_URL": None, "ARBITER_DATA_DIR": "/nonexistent"}
    )
    assert result.exit_code == 2 and "no database configured" in result.output
