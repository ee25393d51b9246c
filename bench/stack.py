"""What a bench run starts and stops: Postgres, Redis, the brokerage simulator, Celery workers.

Services are private embedded servers by default (`arbiter.embedded`), so the CPU and command
counts measured on them are this run's alone; `--services local` uses the machine's
127.0.0.1:5432 / 6379 with a fresh database and a claimed Redis database number, as the tests
do (then Redis command counts and server CPU include whatever else uses those servers).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
import redis
from psycopg import sql

from arbiter.embedded import EmbeddedPostgres, EmbeddedRedis, libpq_url, postgres_reachable
from db.engine import Database
from db.migrate import upgrade
from db.seed import seed_default_strategies
from tests.fixtures.services import LOCAL_POSTGRES, LOCAL_REDIS, RedisDbClaim, with_database

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_QUEUES = "signals,orders,maintenance"

# Deployment shapes: (node name, prefork concurrency, queues) per worker process.
SHAPES: dict[str, list[tuple[str, int, str]]] = {
    "prefork2": [("w1", 2, ALL_QUEUES)],
    "prefork4": [("w1", 4, ALL_QUEUES)],
    "two-c1": [("w1", 1, ALL_QUEUES), ("w2", 1, ALL_QUEUES)],
    "split": [("sig", 1, "signals,maintenance"), ("ord", 1, "orders")],
}


# Arbiter's risk limits out of the way: the bench measures cost, not refusals.
RISK_ENV = {"ARBITER_MAX_OPEN_ORDERS_PER_STRATEGY": "1000000",
            "ARBITER_MAX_SIGNALS_PER_MINUTE": "1000000"}


class Services:
    """Postgres and Redis for one run; `stop()` undoes whatever `start()` did."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.root = Path(tempfile.mkdtemp(prefix="arbiter-bench-"))
        self.server_url = ""  # Postgres, maintenance database
        self.redis_url = ""
        self._pg: EmbeddedPostgres | None = None
        self._redis: EmbeddedRedis | None = None
        self._claim: RedisDbClaim | None = None
        self._databases: list[str] = []

    def start(self) -> None:
        local = self.mode == "local" or (
            self.mode == "auto" and postgres_reachable(LOCAL_POSTGRES, timeout=1)
        )
        if local:
            self.mode = "local"
            self.server_url = LOCAL_POSTGRES
            self._claim = RedisDbClaim(LOCAL_REDIS).acquire()
            self.redis_url = self._claim.url
            return
        self.mode = "embedded"
        self._pg = EmbeddedPostgres(self.root / "postgres", database="postgres")
        self._pg.start()
        with psycopg.connect(libpq_url(self._pg.admin_url), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            conn.execute("ALTER SYSTEM SET max_connections = 200")
        self._pg.restart()
        self.server_url = self._pg.admin_url
        self._redis = EmbeddedRedis(self.root / "redis")
        self._redis.start()
        self.redis_url = self._redis.url

    def new_database(self, label: str) -> str:
        """A fresh database (dropped on stop), with pg_stat_statements where available."""
        name = f"arbiter_bench_{label}_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._databases.append(name)
        url = with_database(self.server_url, name)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn, contextlib.suppress(
            psycopg.Error
        ):
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return url

    def arbiter_database(self, label: str) -> str:
        """A fresh database with Arbiter's schema and the default strategies."""
        url = self.new_database(label)
        upgrade(url)
        database = Database(url)
        with database.unit_of_work() as uow:
            seed_default_strategies(uow.session)
            uow.commit()
        database.dispose()
        return url

    def postgres_pids(self) -> list[int]:
        """The postmaster and its children (backends, walwriter, ...)."""
        try:
            with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
            pid = int((Path(row[0]) / "postmaster.pid").read_text().split()[0]) if row else 0
            parent = psutil.Process(pid)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
        except (OSError, ValueError, psycopg.Error, psutil.Error):
            return []

    def redis_pids(self) -> list[int]:
        with redis.Redis.from_url(self.redis_url) as client:
            return [int(client.info("server")["process_id"])]

    def stop(self) -> None:
        if self.server_url:
            for name in self._databases:
                with contextlib.suppress(psycopg.Error), psycopg.connect(
                    libpq_url(self.server_url), autocommit=True
                ) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                                 .format(sql.Identifier(name)))
        if self._claim is not None:
            self._claim.release()
        for server in (self._redis, self._pg):
            if server is not None:
                server.remove()
        shutil.rmtree(self.root, ignore_errors=True)


class CeleryWorker:
    """`celery -A <app> worker` in its own process group, logging to a file."""

    def __init__(self, app: str, name: str, concurrency: int, queues: str,
                 env: dict[str, str], log_path: Path) -> None:
        self.argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-l", "INFO",
                     "-n", f"{name}@%h", "-c", str(concurrency), "-Q", queues,
                     "--without-gossip", "--without-mingle"]
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> CeleryWorker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{text[-3000:]}")
            if "ready." in text:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    @property
    def main_pid(self) -> int | None:
        return None if self.proc is None or self.proc.poll() is not None else self.proc.pid

    def pids(self) -> list[int]:
        if self.main_pid is None:
            return []
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(self.main_pid)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
        return []

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pids = self.pids()
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)
        for pid in pids:  # nothing of ours outlives the run
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


class Deployment:
    """The workers of one shape for one Celery app."""

    def __init__(self, app: str, shape: str, env: dict[str, str], log_dir: Path) -> None:
        self.workers = [
            CeleryWorker(app, f"{app.replace('.', '-')}-{name}", c, queues, env,
                         log_dir / f"{app}-{shape}-{name}.log")
            for name, c, queues in SHAPES[shape]
        ]

    def start(self) -> Deployment:
        try:
            for worker in self.workers:
                worker.start()
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self) -> list[int]:
        return [pid for worker in self.workers for pid in worker.pids()]

    def main_pids(self) -> list[int]:
        return [pid for worker in self.workers for pid in worker.pids()[:1]]

    def child_pids(self) -> list[int]:
        return [pid for worker in self.workers for pid in worker.pids()[1:]]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
