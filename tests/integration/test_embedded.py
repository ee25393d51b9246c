"""The embedded services are real servers: TCP, durable data, clean stops, no leftovers; and
locked down: passwords, no superuser for Arbiter, protected configs, private files, never root."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import psutil
import psycopg
import pytest
import redis

from arbiter.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    ServiceError,
    libpq_url,
    postgres_reachable,
    redis_reachable,
    resolve_services,
)
from tests.fixtures.services import CLAIM_KEY, RedisDbClaim


def family(server: EmbeddedPostgres | EmbeddedRedis) -> list[psutil.Process]:
    pid = server.pid()
    assert pid is not None and server.is_running()
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def assert_gone(procs: list[psutil.Process], port: int | None) -> None:
    alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port or 0)) != 0, f"something still on {port}"


def scalar(url: str, query: str) -> object:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(query).fetchone()
        return row[0] if row else None


def test_embedded_postgres_serves_tcp_and_keeps_data_across_a_clean_restart(own_postgres):
    assert own_postgres.url.startswith("postgresql+psycopg://arbiter:")
    with psycopg.connect(libpq_url(own_postgres.url)) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('survives')")
    port, procs = own_postgres.port, family(own_postgres)

    own_postgres.stop()
    assert not own_postgres.is_running()
    assert_gone(procs, port)
    assert not postgres_reachable(own_postgres.url, timeout=1)

    assert own_postgres.start() is True
    assert own_postgres.port == port
    assert scalar(own_postgres.url, "SELECT note FROM kept") == "survives"


def test_embedded_postgres_recovers_committed_rows_after_being_killed(own_postgres):
    with psycopg.connect(libpq_url(own_postgres.url)) as conn:
        conn.execute("CREATE TABLE crashed (n int)")
        conn.execute("INSERT INTO crashed VALUES (7)")
    port, procs = own_postgres.port, family(own_postgres)

    own_postgres.kill()
    assert_gone(procs, port)

    own_postgres.restart()
    assert own_postgres.port == port
    assert scalar(own_postgres.url, "SELECT n FROM crashed") == 7


def test_a_second_start_on_the_same_folder_adopts_the_running_postgres(own_postgres):
    again = EmbeddedPostgres(own_postgres.data_dir)
    assert again.start() is False
    assert again.url == own_postgres.url
    assert again.pid() == own_postgres.pid()


def test_a_failed_start_reports_the_server_log(service_tmp_dir, own_redis):
    taken = EmbeddedPostgres(service_tmp_dir, port=own_redis.port)
    with pytest.raises(ServiceError, match=r"(?s)could not start server.*postgres\.log"):
        taken.start(timeout=20)
    assert not taken.is_running()


def test_embedded_redis_keeps_keys_across_a_clean_restart(own_redis):
    assert own_redis.url.endswith(f"@127.0.0.1:{own_redis.port}/0")
    redis.Redis.from_url(own_redis.url).set("kept", "survives")
    port, procs = own_redis.port, family(own_redis)

    own_redis.stop()
    assert not own_redis.is_running()
    assert_gone(procs, port)
    assert not redis_reachable(own_redis.url, timeout=0.5)

    assert own_redis.start() is True
    assert own_redis.port == port
    assert redis.Redis.from_url(own_redis.url).get("kept") == b"survives"


def test_embedded_redis_comes_back_on_its_port_after_being_killed(own_redis):
    port, procs = own_redis.port, family(own_redis)
    own_redis.kill()
    assert_gone(procs, port)
    own_redis.restart()
    assert own_redis.port == port
    assert redis_reachable(own_redis.url)
    assert EmbeddedRedis(own_redis.data_dir).start() is False


def test_database_url_is_a_database_of_this_run_only(database_url, postgres_server_url):
    name = database_url.rsplit("/", 1)[1]
    assert name.startswith(f"arbiter_test_{os.getpid()}_")
    assert database_url.startswith("postgresql+psycopg://postgres")
    assert "@127.0.0.1:" in database_url
    assert scalar(database_url, "SELECT current_database()") == name
    # Created by this run (other tests may have migrated it since): younger than the server.
    assert (
        scalar(postgres_server_url, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")
        == 1
    )


def test_redis_url_uses_a_database_claimed_for_this_run(redis_url, redis_server_url):
    number = int(redis_url.rsplit("/", 1)[1])
    assert 1 <= number <= 15
    admin = redis.Redis.from_url(f"{redis_server_url}/0")
    assert admin.get(CLAIM_KEY.format(number)) is not None


def test_concurrent_redis_claims_never_share_a_database(redis_server_url):
    with ThreadPoolExecutor(max_workers=4) as pool:
        claims = list(pool.map(lambda _: RedisDbClaim(redis_server_url).acquire(), range(4)))
    try:
        assert len({claim.number for claim in claims}) == 4
    finally:
        for claim in claims:
            claim.release()
    admin = redis.Redis.from_url(f"{redis_server_url}/0")  # released: no longer holds our token
    held = [admin.get(CLAIM_KEY.format(claim.number)) for claim in claims]
    assert not {claim.token.encode() for claim in claims} & set(held)


def test_service_env_carries_this_runs_urls(service_env, database_url, redis_url):
    assert service_env["ARBITER_DATABASE_URL"] == database_url
    assert service_env["ARBITER_REDIS_URL"] == redis_url
    assert service_env["ARBITER_EVENT_CHANNEL_PREFIX"].startswith("arbiter.test.")


def test_reachability_checks_say_no_for_a_closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
        assert not postgres_reachable(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x", 1)
        assert not redis_reachable(f"redis://127.0.0.1:{port}/0", 0.5)


def test_resolve_services_uses_configured_urls_and_starts_nothing(tmp_path):
    settings = SimpleNamespace(database_url="postgresql+psycopg://db/x", redis_url="redis://r/1")
    assert resolve_services(settings, tmp_path) == ("postgresql+psycopg://db/x", "redis://r/1", [])
    assert list(tmp_path.iterdir()) == []


def test_resolve_services_starts_embedded_servers_when_none_are_configured(service_tmp_dir):
    settings = SimpleNamespace(database_url=None, redis_url=None)
    database, redis_url, started = resolve_services(settings, service_tmp_dir)
    try:
        assert [type(s) for s in started] == [EmbeddedPostgres, EmbeddedRedis]
        assert database.endswith("/arbiter") and postgres_reachable(database)
        key = secrets.token_hex(4)
        assert redis.Redis.from_url(redis_url).set(key, 1)
        # A second call (another `arbiter` process) adopts them and owns nothing.
        assert resolve_services(settings, service_tmp_dir) == (database, redis_url, [])
    finally:
        for server in started:
            server.stop()
    assert not any(server.is_running() for server in started)


# --- locked down --------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_postgres_refuses_connections_without_the_password(own_postgres):
    port = own_postgres.port
    for user in ("postgres", "arbiter", "embedded_postgres"):
        for password in ("", "wrong"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(host="127.0.0.1", port=port, user=user, password=password,
                                dbname="postgres", connect_timeout=5)
    assert postgres_reachable(own_postgres.url) and postgres_reachable(own_postgres.admin_url)


def test_arbiter_has_a_role_of_its_own_that_owns_its_database_and_is_no_superuser(own_postgres):
    row = scalar(own_postgres.url,
                 "SELECT row(r.rolsuper, r.rolcreaterole, r.rolcreatedb, d.datdba::regrole::text)"
                 " FROM pg_roles r, pg_database d"
                 " WHERE r.rolname = current_user AND d.datname = current_database()")
    assert row == ("f", "f", "f", "arbiter")  # a record comes back as text
    assert scalar(own_postgres.url, "SHOW password_encryption") == "scram-sha-256"
    hba = scalar(own_postgres.admin_url,
                 "SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules")
    assert hba == "scram-sha-256"  # no trust line anywhere


def test_embedded_redis_refuses_clients_without_the_password(own_redis):
    for password in (None, "wrong"):
        client = redis.Redis(host="127.0.0.1", port=own_redis.port, password=password)
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        client.close()
    assert redis_reachable(own_redis.url)


@pytest.mark.parametrize("command", [
    ("CONFIG", "SET", "dir", "/tmp"),
    ("CONFIG", "SET", "dbfilename", "x.rdb"),
    ("MODULE", "LOAD", "/tmp/evil.so"),
    ("DEBUG", "SLEEP", "0"),
])
def test_embedded_redis_keeps_protected_configs_and_commands_refused(own_redis, command):
    with redis.Redis.from_url(own_redis.url) as client, pytest.raises(redis.ResponseError):
        client.execute_command(*command)


def test_credentials_are_generated_once_and_kept_private(own_postgres, own_redis):
    for server in (own_postgres, own_redis):
        assert mode(server.data_dir) == 0o700
    files = [own_postgres.password_file, own_postgres.superuser_password_file,
             own_redis.password_file]
    for path in files:
        assert mode(path) == 0o600, path
    assert len({path.read_text() for path in files}) == 3
    url = own_redis.url
    own_redis.restart()
    assert own_redis.url == url  # the same password after a restart


def test_logs_and_the_append_only_file_are_not_readable_by_others(own_postgres, own_redis):
    redis.Redis.from_url(own_redis.url).set("written", 1)
    aof = [p for p in own_redis.run_dir.rglob("*") if "appendonly" in p.name]
    assert aof
    for path in [own_postgres.log_file, own_redis.log_file, *aof, own_postgres.pgdata]:
        assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


@pytest.mark.skipif(os.geteuid() != 0, reason="root only: the servers' system users")
def test_as_root_the_servers_run_as_system_users_and_no_parent_folder_changes(tmp_path):
    # A folder only root can enter, as root's home folder is: once it would have been opened.
    locked = Path(tempfile.mkdtemp(prefix="arbiter-locked-"))
    nested = locked / "home" / "project"
    nested.mkdir(parents=True)
    locked.chmod(0o700)
    (locked / "home").chmod(0o750)
    before = {p: mode(p) for p in (locked, locked / "home", nested)}
    postgres, valkey = EmbeddedPostgres(nested / "pg"), EmbeddedRedis(nested / "redis")
    try:
        postgres.start()
        valkey.start()
        assert {p: mode(p) for p in before} == before
        users = {psutil.Process(server.pid()).username() for server in (postgres, valkey)}
        assert users == {"embedded_postgres", "arbiter_valkey"}
        for server in (postgres, valkey):
            owner = pwd.getpwuid(server.run_dir.stat().st_uid).pw_name
            assert owner == server.system_user and mode(server.run_dir) == 0o700
        assert postgres_reachable(postgres.url) and redis_reachable(valkey.url)
    finally:
        postgres.remove()
        valkey.remove()
        run_dirs = [postgres.run_dir, valkey.run_dir]
        shutil.rmtree(locked, ignore_errors=True)
    assert not any(path.exists() for path in run_dirs)


@pytest.mark.skipif(os.geteuid() != 0, reason="root only: the data lives under the system home")
def test_a_fresh_folder_where_a_removed_one_was_starts_afresh_and_keeps_the_old_data_aside(
    tmp_path,
):
    # A clone removed (its passwords with it) and cloned again at the same path: the data the
    # old folder left under the system home must neither block the start nor be reused.
    folder = tmp_path / "project" / ".arbiter"
    postgres, valkey = EmbeddedPostgres(folder / "postgres"), EmbeddedRedis(folder / "redis")
    old_run_dirs = [postgres.run_dir, valkey.run_dir]
    aside: list[Path] = []
    try:
        postgres.start()
        valkey.start()
        redis.Redis.from_url(valkey.url).set("left-by-the-old-folder", "1")
        postgres.stop()
        valkey.stop()
        shutil.rmtree(tmp_path / "project")

        postgres, valkey = EmbeddedPostgres(folder / "postgres"), EmbeddedRedis(folder / "redis")
        assert postgres.start() and valkey.start()
        assert scalar(postgres.url, "SELECT 1") == 1
        assert redis.Redis.from_url(valkey.url).get("left-by-the-old-folder") is None
        for run_dir in old_run_dirs:
            kept = list(run_dir.parent.glob(f"{run_dir.name}.orphaned-*"))
            assert len(kept) == 1, kept
            aside += kept
        assert any(aside[0].rglob("PG_VERSION"))  # the old data is kept, not deleted
    finally:
        postgres.remove()
        valkey.remove()
        for path in aside:
            shutil.rmtree(path, ignore_errors=True)
