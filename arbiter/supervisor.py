"""Child processes for `arbiter up` and `arbiter demo`: start, watch, stop.

Each child runs in its own process group with stdout and stderr appended to
`<data_dir>/logs/<name>.log`. A child counts as started once its readiness check passes (an
HTTP answer or a line in its log). Stopping sends SIGTERM to the whole group, then SIGKILL to
whatever is left after a timeout, so no pool process or grandchild outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import psutil

from core.errors import OperationalError


class ChildFailed(OperationalError):
    """A child exited or never became ready; the message ends with its log tail."""


class Shutdown(Exception):
    """Raised in the main thread on SIGTERM (SIGINT raises KeyboardInterrupt as usual)."""


ReadyCheck = Callable[["Child"], bool]


def http_ready(url: str) -> ReadyCheck:
    """Ready once `url` answers with a status below 500 (401 counts: it is listening)."""

    def check(_: Child) -> bool:
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def log_ready(marker: str) -> ReadyCheck:
    """Ready once `marker` appears in the part of the log this start wrote."""

    def check(child: Child) -> bool:
        return marker in child.log_text(since_start=True)

    return check


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: ReadyCheck
    cwd: Path | None = None
    detail: str = ""  # shown in the status table, e.g. a URL
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    _log_offset: int = 0
    _family: list[psutil.Process] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, *, since_start: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            if since_start:
                log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 25) -> str:
        tail = self.log_text(since_start=True).splitlines()[-lines:]
        return f"last lines of {self.log_path}:\n" + "\n".join(tail)

    def start(self, timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Logs may hold order details: readable by their owner only.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.ready(self):
            if not self.running():
                raise ChildFailed(f"{self.name} exited with code {self.proc.returncode}\n"
                                  f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ChildFailed(f"{self.name} not ready within {timeout:.0f}s\n"
                                  f"{self.log_tail()}")
            time.sleep(0.1)
            self._remember_family()
        self._remember_family()

    def _remember_family(self) -> None:
        """Keep the pids seen so far: after SIGTERM the parent may go before its children."""
        if not self.running() or self.pid is None:
            return
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(self.pid)
            known = {p.pid for p in self._family}
            for proc in [parent, *parent.children(recursive=True)]:
                if proc.pid not in known:
                    self._family.append(proc)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL the group and every pid seen in it."""
        if self.proc is None:
            return
        self._remember_family()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for proc in self._family:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
        psutil.wait_procs(self._family, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._family = []


class Supervisor:
    """Children started in order, stopped in reverse order, restarted a few times if they die."""

    def __init__(self, data_dir: Path, max_restarts: int = 3) -> None:
        self.data_dir = data_dir
        self.log_dir = data_dir / "logs"
        self.children: list[Child] = []
        self.max_restarts = max_restarts

    def start(self, child: Child, timeout: float = 60.0) -> Child:
        self.children.append(child)
        child.start(timeout)
        return child

    def check(self) -> list[str]:
        """Restart children that died; returns one message per event worth telling."""
        messages = []
        for child in self.children:
            if child.running():
                child._remember_family()
                continue
            code = child.proc.returncode if child.proc is not None else None
            if child.restarts >= self.max_restarts:
                raise ChildFailed(f"{child.name} keeps exiting (code {code}); gave up after "
                                  f"{child.restarts} restarts\n{child.log_tail()}")
            child.restarts += 1
            child.stop()
            messages.append(f"{child.name} exited (code {code}); restarting "
                            f"({child.restarts}/{self.max_restarts})")
            child.start()
        return messages

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def status_rows(self) -> list[dict[str, str]]:
        return [
            {"process": c.name, "pid": str(c.pid or "-"),
             "state": "running" if c.running() else "stopped", "where": c.detail,
             "log": str(c.log_path)}
            for c in self.children
        ]  # fmt: skip


@contextlib.contextmanager
def sigterm_as_shutdown() -> Iterator[None]:
    """Turn SIGTERM into `Shutdown` in the main thread for the duration of the block."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Shutdown(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while cleaning up, so a second Ctrl-C cannot cut it short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
