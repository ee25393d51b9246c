"""The whole local stack for `arbiter up` and `arbiter demo`: Postgres and Redis (configured or
embedded), migrations and seed, the brokerage simulator, a Celery worker, beat, the trade
stream consumer and Flower.

Files under the data folder (default `.arbiter`):

    env                 the URLs a second terminal needs (read by the CLI as a fallback), 0600
    arbiter.pid         the process that owns the running stack; gone after a clean stop
    flower-credentials  `user:password` for Flower's basic auth, generated once, 0600
    logs/*.log          one log per child process
    postgres/ redis/ brokersim/   the services' data
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

import arbiter
from arbiter.embedded import free_port, resolve_services, write_private
from arbiter.supervisor import Child, Supervisor, http_ready, log_ready
from core.errors import OperationalError
from core.settings import Settings, is_loopback_host

ENV_FILE = "env"
PID_FILE = "arbiter.pid"
CREDENTIALS_FILE = "flower-credentials"
SIMULATOR_PORT = 8765
FLOWER_PORT = 5555
QUEUES = "signals,orders,maintenance"
PROJECT_ROOT = Path(arbiter.__file__).resolve().parents[1]

Say = Callable[[str], None]
log = logging.getLogger(__name__)


class StackBusy(OperationalError):
    """Another `arbiter up` or `arbiter demo` already runs on this data folder."""


def data_dir_of(settings: Settings) -> Path:
    return settings.data_dir.expanduser().resolve()


def make_data_dir(data_dir: Path) -> None:
    """Create the data folder 0700 (its parents as the umask says). An existing one is tightened
    to 0700 when it is empty or holds our files (an earlier run made it); any other folder
    keeps its mode, reported when others can read it."""
    ours = (ENV_FILE, PID_FILE, CREDENTIALS_FILE, "postgres", "redis", "logs", "brokersim")
    if not data_dir.exists():
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(mode=0o700, exist_ok=True)
        data_dir.chmod(0o700)
    elif data_dir.stat().st_mode & 0o077 and data_dir.stat().st_uid == os.geteuid() and (
            not any(data_dir.iterdir()) or any((data_dir / name).exists() for name in ours)):
        data_dir.chmod(0o700)
    elif data_dir.stat().st_mode & 0o077:
        log.warning("%s is readable by others (mode %o): `chmod 700 %s` keeps its logs and "
                    "credentials private", data_dir, stat.S_IMODE(data_dir.stat().st_mode),
                    data_dir)


def read_env_file(data_dir: Path) -> dict[str, str]:
    """`KEY=VALUE` lines (shell-quoted, `export` optional) from `<data_dir>/env`; only from a
    file that belongs to us and that nobody else can write (else another user could point
    our CLI at a database of theirs): such a file is ignored, with a warning."""
    path = data_dir / ENV_FILE
    values: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as handle:
            info = os.fstat(handle.fileno())
            if info.st_uid != os.geteuid() or info.st_mode & 0o022:
                log.warning("ignoring %s: it must belong to uid %d and be writable by its owner "
                            "only (it is uid %d, mode %o)", path, os.geteuid(), info.st_uid,
                            stat.S_IMODE(info.st_mode))
                return {}
            text = handle.read()
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["export"]:
                words = words[1:]
            for word in words:
                key, sep, value = word.partition("=")
                if sep and key.startswith("ARBITER_"):
                    values[key] = value
    return values


def masked(url: str) -> str:
    """The URL with its password replaced by ***, for printing."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def owner_pid(data_dir: Path) -> int | None:
    """The pid of the live process running a stack on `data_dir`, if any."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((data_dir / PID_FILE).read_text().split()[0])
        if pid != os.getpid() and psutil.pid_exists(pid):
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                return pid
    return None


def flower_credentials(settings: Settings, data_dir: Path) -> tuple[str, str, bool]:
    """(user, password, generated_now): ARBITER_FLOWER_USER/PASSWORD when set, else the stored
    pair, else a new random password stored 0600. There is never a default password."""
    user = settings.flower_user or "arbiter"
    if settings.flower_password:
        return user, settings.flower_password, False
    path = data_dir / CREDENTIALS_FILE
    with contextlib.suppress(OSError):
        stored_user, sep, stored_password = path.read_text().strip().partition(":")
        if sep and stored_password:
            return settings.flower_user or stored_user, stored_password, False
    password = secrets.token_urlsafe(18)
    write_private(path, f"{user}:{password}\n")
    return user, password, True


def _loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url.rstrip('/')}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    """Start with `start()`, always `stop()` (idempotent): it stops only what this run started."""

    settings: Settings
    data_dir: Path
    say: Say = print
    simulator_options: dict[str, str] = field(default_factory=dict)
    child_env: dict[str, str] = field(default_factory=dict)
    fresh_simulator: bool = False

    database_url: str = ""
    redis_url: str = ""
    brokerage_url: str = ""
    flower_url: str | None = None
    web_url: str | None = None
    simulator_started: bool = False
    embedded: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.data_dir)
        self._servers: list[Any] = []
        self._owns_pid_file = False
        self._wrote_env = False

    @property
    def log_dir(self) -> Path:
        return self.supervisor.log_dir

    # -- start --------------------------------------------------------------------------------

    def start(self, *, flower: bool = True, web: bool = False) -> None:
        make_data_dir(self.data_dir)
        self._claim()
        self.say("starting Postgres and Redis ...")
        self.database_url, self.redis_url, started = resolve_services(self.settings, self.data_dir)
        self._servers = list(started)
        self.embedded = [name for name, configured in (("postgres", self.settings.database_url),
                                                       ("redis", self.settings.redis_url))
                         if not configured]  # fmt: skip
        self.say("applying migrations and seeding strategies ...")
        self._migrate()
        self._start_simulator()
        env = self._env()
        self.say("starting the Celery worker and beat ...")
        self.supervisor.start(Child(
            "worker",
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-l", "INFO",
             "-c", "2", "-Q", QUEUES, "-n", f"arbiter-{os.getpid()}@%h",
             "--without-gossip", "--without-mingle"],
            env, self.log_dir / "worker.log", log_ready("ready."), cwd=self.data_dir,
            detail=f"queues {QUEUES}, concurrency 2",
        ))  # fmt: skip
        # Alerts on a worker of their own: a slow or dead target never holds up a signal.
        self.supervisor.start(Child(
            "notifier",
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-l", "INFO",
             "-c", "1", "-Q", "notifications", "-n", f"notifier-{os.getpid()}@%h",
             "--without-gossip", "--without-mingle"],
            env, self.log_dir / "notifier.log", log_ready("ready."), cwd=self.data_dir,
            detail="queue notifications, concurrency 1",
        ))  # fmt: skip
        self.supervisor.start(Child(
            "beat",
            [sys.executable, "-m", "celery", "-A", "tasks", "beat", "-l", "INFO",
             "-s", str(self.data_dir / "celerybeat-schedule")],
            env, self.log_dir / "beat.log", log_ready("beat: Starting"), cwd=self.data_dir,
            detail="reconcile, recover, relay, expire locks",
        ))  # fmt: skip
        self.supervisor.start(Child(
            "stream",
            [sys.executable, "-c", "from arbiter.cli import main; main()", "stream"],
            env, self.log_dir / "stream.log", log_ready("trade stream consumer"),
            cwd=self.data_dir, detail="fills from the brokerage's trade_updates websocket",
        ))  # fmt: skip
        if flower:
            self._start_flower(env)
        if web:
            self._start_web(env)
        self._write_env_file()

    def _claim(self) -> None:
        pid = owner_pid(self.data_dir)
        if pid is not None:
            raise StackBusy(f"an Arbiter stack already runs on {self.data_dir} (pid {pid}); "
                            "stop it first or set ARBITER_DATA_DIR to another folder")
        write_private(self.data_dir / PID_FILE, f"{os.getpid()}\n")
        self._owns_pid_file = True

    def _migrate(self) -> None:
        from db.engine import Database
        from db.migrate import upgrade
        from db.seed import seed_default_strategies

        upgrade(self.database_url)
        database = Database(self.database_url, pool_size=1, application_name="arbiter-up")
        try:
            with database.unit_of_work() as uow:
                seed_default_strategies(uow.session)
                uow.commit()
        finally:
            database.dispose()

    def _start_simulator(self) -> None:
        configured = os.environ.get("ARBITER_BROKERAGE_URL")
        url = configured or self.settings.brokerage_url
        if configured and not _loopback(url):
            self.brokerage_url = url  # a real brokerage (Alpaca): nothing to start
            return
        if configured and _answers(url):
            self.brokerage_url = url  # a simulator someone else runs
            return
        port = urlsplit(url).port if configured else None
        port = port or free_port(SIMULATOR_PORT)
        self.brokerage_url = f"http://127.0.0.1:{port}"
        sim_dir = self.data_dir / "brokersim"
        if self.fresh_simulator and sim_dir.exists():
            import shutil

            shutil.rmtree(sim_dir)
        argv = [sys.executable, "-m", "brokersim", "serve", "--host", "127.0.0.1",
                "--port", str(port), "--data", str(sim_dir)]
        for name, value in self.simulator_options.items():
            argv += [f"--{name.replace('_', '-')}", value]
        self.say(f"starting the brokerage simulator on {self.brokerage_url} ...")
        self.supervisor.start(Child("simulator", argv, self._env(), self.log_dir / "simulator.log",
                                    http_ready(f"{self.brokerage_url}/healthz"),
                                    cwd=self.data_dir, detail=self.brokerage_url), timeout=30)
        self.simulator_started = True

    def _start_flower(self, env: dict[str, str]) -> None:
        user, password, generated = flower_credentials(self.settings, self.data_dir)
        port = free_port(FLOWER_PORT)
        self.flower_url = f"http://127.0.0.1:{port}"
        # The password travels in the environment, not argv, so `ps` does not show it.
        flower_env = {**env, "FLOWER_BASIC_AUTH": f"{user}:{password}"}
        self.say("starting Flower ...")
        self.supervisor.start(Child(
            "flower",
            [sys.executable, "-m", "celery", "-A", "tasks", "flower", "--address=127.0.0.1",
             f"--port={port}"],
            flower_env, self.log_dir / "flower.log", http_ready(f"{self.flower_url}/healthcheck"),
            cwd=self.data_dir, detail=self.flower_url,
        ))  # fmt: skip
        if generated:  # the password itself is never printed
            self.say(f"Flower login generated once: user {user!r}, password in "
                     f"{self.data_dir / CREDENTIALS_FILE} (0600)")

    def _start_web(self, env: dict[str, str]) -> None:
        """`arbiter web` on loopback (ARBITER_WEB_HOST/PORT may say otherwise)."""
        port = free_port(self.settings.web_port)
        host = self.settings.web_host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        self.web_url = f"http://{shown}:{port}"
        self.say("starting the web API and dashboard ...")
        self.supervisor.start(Child(
            "web",
            [sys.executable, "-c", "from arbiter.cli import main; main()", "web",
             "--host", host, "--port", str(port)],
            env, self.log_dir / "web.log", http_ready(f"{self.web_url}/healthz"),
            cwd=self.data_dir, detail=self.web_url,
        ))  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
        env.update(self.child_env)
        env.update(self.urls())
        env["ARBITER_DATA_DIR"] = str(self.data_dir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                          env.get("PYTHONPATH")]))
        return env

    def urls(self) -> dict[str, str]:
        """The variables a second terminal (or a strategy process) needs."""
        values = {
            "ARBITER_DATABASE_URL": self.database_url,
            "ARBITER_REDIS_URL": self.redis_url,
            "ARBITER_BROKER_URL": self.settings.broker_url or "",
            "ARBITER_BROKERAGE_URL": self.brokerage_url,
            "ARBITER_WEB_URL": self.web_url or "",
        }
        if self.settings.event_channel_prefix != "arbiter.events":
            values["ARBITER_EVENT_CHANNEL_PREFIX"] = self.settings.event_channel_prefix
        return {k: v for k, v in values.items() if v}

    def export_line(self) -> str:
        """A one-line `export ...`; when a URL holds a password, sourcing the env file instead."""
        if any(urlsplit(v).password for v in self.urls().values()):
            return f"set -a; . {shlex.quote(str(self.data_dir / ENV_FILE))}; set +a"
        return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in self.urls().items())

    def _write_env_file(self) -> None:
        lines = [f"{k}={shlex.quote(v)}" for k, v in self.urls().items()]
        write_private(self.data_dir / ENV_FILE,
                      "# written by the running Arbiter stack; removed when it stops\n"
                      + "\n".join(lines) + "\n")
        self._wrote_env = True

    # -- watch and stop -----------------------------------------------------------------------

    def check(self) -> list[str]:
        return self.supervisor.check()

    def stop(self) -> None:
        """Children first (worker before the services it talks to), then the embedded servers
        this run started, then the env and pid files."""
        if self._wrote_env:
            (self.data_dir / ENV_FILE).unlink(missing_ok=True)
            self._wrote_env = False
        self.supervisor.stop()
        for server in reversed(self._servers):
            server.stop()
        self._servers = []
        if self._owns_pid_file:
            (self.data_dir / PID_FILE).unlink(missing_ok=True)
            self._owns_pid_file = False
