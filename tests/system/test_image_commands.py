"""Every app service of docker-compose.yml runs from the image as the Dockerfile installs it.

No Docker here, so the image is a virtual environment made by the Dockerfile's own `pip install`
line (not editable, no extras; cached by tests/system/image.py), and each service of our image
(those with `build:`; third-party images are skipped) runs its compose command with its compose
environment, against this run's Postgres database and Redis, hosts rewritten to loopback. A
one-shot service (`restart: "no"`) must exit 0; a long-running one must pass its own compose
healthcheck, run the same way, then is stopped. A service added to the file later is covered
without editing this test.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from arbiter.embedded import free_port, libpq_url
from tests.fixtures.services import with_database
from tests.system import image

pytestmark = [pytest.mark.system, pytest.mark.timeout(1800)]

ONE_SHOT_TIMEOUT_S = 180
HEALTHY_WITHIN_S = 120
NO_HEALTHCHECK_UP_S = 10  # a service that declares no healthcheck must at least stay up


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's environment, held (locked) for this module's tests."""
    with image.image_venv(image.read_dockerfile(), tmp_path_factory.mktemp("image")) as path:
        yield path


IMPORT_ALL = """
import importlib, pkgutil, sys
failed = []
for top in sys.argv[1:]:
    module = importlib.import_module(top)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), top + "."):
        if info.name.endswith("__main__") or ".migrations." in info.name:
            continue  # a program to run, or Alembic's scripts (loaded by Alembic)
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed.append(f"{info.name}: {exc!r}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_of_the_image_imports_with_its_runtime_dependencies_only(
    venv: Path, tmp_path: Path,
) -> None:
    tops = sorted(
        {p.name for p in (venv / "lib").glob("python3*/site-packages/*")
         if (image.REPO_ROOT / p.name / "__init__.py").exists()}
        | {"beat_schedule"})  # fmt: skip
    assert {"core", "db", "tasks", "arbiter", "brokersim"} <= set(tops)
    done = subprocess.run([str(venv / "bin" / "python"), "-c", IMPORT_ALL, *tops], cwd=tmp_path,
                          env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


@pytest.fixture
def image_database(postgres_server_url: str) -> Iterator[str]:
    """An empty database of its own: the compose `migrate` service has to build the schema."""
    name = f"arbiter_image_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(libpq_url(postgres_server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(postgres_server_url, name)
    finally:
        with psycopg.connect(libpq_url(postgres_server_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


class Running:
    def __init__(self, service: image.Service, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.service, self.proc, self.log = service, proc, log

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.service.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-40:])

    def stop(self, grace_s: float = 60) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def test_every_compose_service_of_our_image_runs_from_a_plain_pip_install(
    venv: Path, tmp_path: Path, image_database: str, redis_url: str, event_channel_prefix: str,
) -> None:
    dockerfile = image.read_dockerfile()
    services = image.read_compose()
    ours = [s for s in services.values() if s.ours]
    assert ours, "docker-compose.yml has no service built from our Dockerfile"

    # Values for what compose insists on, and a small worker pool on this shared machine.
    text = image.COMPOSE_FILE.read_text()
    variables = {name: f"test-{secrets.token_hex(8)}" for name in image.required_variables(text)}
    variables["ARBITER_WORKER_CONCURRENCY"] = "1"

    # Each long-running service's ports, moved to free ones here.
    port_maps = {s.name: {p: free_port() for p in image.listening_ports(
        [image.interpolate(w, variables) for w in s.command])} for s in ours}  # fmt: skip
    local_port = {name: next(iter(ports.values())) for name, ports in port_maps.items() if ports}
    stand_ins = {"postgresql": image_database, "redis": redis_url}
    home = tmp_path / "home"
    home.mkdir()

    def environment(service: image.Service) -> dict[str, str]:
        env = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               "LANG": "C.UTF-8", "HOSTNAME": socket.gethostname(), **dockerfile.env}
        for key, value in service.environment.items():
            value = image.interpolate(value, variables)
            env[key] = image.rewrite_url(value, services, local_port, stand_ins)
        # This run's pub/sub channels, so other test runs on the machine never see ours.
        env["ARBITER_EVENT_CHANNEL_PREFIX"] = event_channel_prefix
        return env

    def words(service: image.Service, argv: list[str]) -> list[str]:
        mounts = {m: str(tmp_path / service.name / m.strip("/").replace("/", "_"))
                  for m in [*service.mounts, "/data"]}  # the image's /data as well
        for folder in mounts.values():
            Path(folder).mkdir(parents=True, exist_ok=True)
        argv = [image.interpolate(w, variables) for w in argv]
        return image.rewrite_words(argv, port_maps[service.name], mounts)

    def launch(service: image.Service) -> Running:
        log = tmp_path / f"{service.name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(words(service, service.command), cwd=home,
                                    env=environment(service), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        return Running(service, proc, log)

    def healthy(running: Running) -> bool:
        check = running.service.healthcheck
        assert check is not None
        try:
            done = subprocess.run(words(running.service, check), cwd=home,
                                  env=environment(running.service), capture_output=True,
                                  timeout=30)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    ordered = image.in_dependency_order(ours)
    for service in [s for s in ordered if s.one_shot]:
        running = launch(service)
        try:
            code = running.proc.wait(ONE_SHOT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            running.stop(5)
            code = None
        assert code == 0, f"one-shot {service.name} ended with {code}\n{running.tail()}"

    started: list[Running] = []
    try:
        for service in [s for s in ordered if not s.one_shot]:
            started.append(launch(service))
        for running in started:
            deadline = time.monotonic() + HEALTHY_WITHIN_S
            if running.service.healthcheck is None:
                time.sleep(max(0.0, NO_HEALTHCHECK_UP_S - (time.monotonic() - deadline
                                                          + HEALTHY_WITHIN_S)))
                assert running.proc.poll() is None, f"{running.service.name} exited\n" \
                    + running.tail()
                continue
            while not healthy(running):
                assert running.proc.poll() is None, (
                    f"{running.service.name} exited with {running.proc.returncode}\n"
                    + running.tail())
                assert time.monotonic() < deadline, (
                    f"{running.service.name} not healthy within {HEALTHY_WITHIN_S}s by its "
                    f"compose healthcheck\n" + running.tail())
                time.sleep(1)
    finally:
        for running in reversed(started):
            running.stop()
    names = {s.name for s in ours}
    assert {"migrate", "worker", "beat"} <= names  # what the file is known to hold today
