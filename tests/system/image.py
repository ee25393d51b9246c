"""The image as the Dockerfile builds it and the services as docker-compose.yml runs them, without
Docker: a virtual environment made by the Dockerfile's own `pip install` line, and each compose
service's command, environment and healthcheck read from the file (compose's `${...}`
interpolation included), with hosts and ports rewritten to this machine's loopback.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CACHE_ROOT = Path(os.environ.get("ARBITER_TEST_VENV_CACHE",
                                 Path.home() / ".cache" / "arbiter-test-venv"))


# --- the Dockerfile -----------------------------------------------------------------------


@dataclass
class Dockerfile:
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[list[str], str]] = field(default_factory=list)  # (sources, destination)
    pip_install: list[str] = field(default_factory=list)  # the arguments after `pip install`


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    logical = re.sub(r"\\\n", " ", text)  # line continuations
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    result = Dockerfile()
    for word, rest in _instructions(path.read_text()):
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                result.env[key] = value
        elif word == "COPY":
            *sources, destination = shlex.split(rest)
            result.copies.append((sources, destination))
        elif word == "RUN":
            for step in rest.split("&&"):
                words = shlex.split(step)
                if words[:2] == ["pip", "install"]:
                    result.pip_install = words[2:]
    if not result.pip_install:
        raise AssertionError(f"no `pip install` in a RUN line of {path}")
    return result


def build_context(dockerfile: Dockerfile, into: Path) -> Path:
    """What the Dockerfile's COPY lines put in its WORKDIR, copied into `into`."""
    into.mkdir(parents=True, exist_ok=True)
    for sources, destination in dockerfile.copies:
        for source in sources:
            src = REPO_ROOT / source
            target = into / destination
            if destination.endswith("/") or destination == "." or len(sources) > 1:
                target = target / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, target)
    return into


@contextlib.contextmanager
def image_venv(dockerfile: Dockerfile, scratch: Path) -> Iterator[Path]:
    """A virtual environment installed by the Dockerfile's `pip install` line (not editable,
    no extras), cached under ~/.cache/arbiter-test-venv/<hash of pyproject.toml, the
    constraints and that line>; the package itself is reinstalled on every use, so source
    changes count. Held under a lock: one test run uses a cached environment at a time."""
    keyed = [REPO_ROOT / "pyproject.toml", REPO_ROOT / "constraints.txt"]
    digest = hashlib.sha256(" ".join(dockerfile.pip_install).encode())
    digest.update(sys.version.encode())
    for path in keyed:
        digest.update(path.read_bytes() if path.exists() else b"")
    venv = CACHE_ROOT / digest.hexdigest()[:16]
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    context = build_context(dockerfile, scratch / "app")
    with open(f"{venv}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            _pip([*pip, "install", *dockerfile.pip_install], context)
            (venv / ".complete").write_text(" ".join(dockerfile.pip_install) + "\n")
        else:  # dependencies unchanged: our own code, as it is now
            _pip([*pip, "install", "--no-deps", "--force-reinstall", "."], context)
        yield venv


def _pip(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1500)
    if done.returncode != 0:
        raise AssertionError(f"{shlex.join(command)} failed:\n{done.stderr[-4000:]}")


# --- docker-compose.yml -------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}"
                       r"|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation: `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`,
    `${NAME:?error}`, `${NAME?error}`."""

    def replace(match: re.Match[str]) -> str:
        dollar, name, operator, argument, bare = match.groups()
        if dollar:
            return "$"
        name = name or bare
        present = name in variables
        value = variables.get(name, "")
        if (operator in (":-", ":?") and not value) or (operator in ("-", "?") and not present):
            if operator.endswith("?"):
                raise AssertionError(f"compose refuses: {name} {argument}")
            return argument if operator.endswith("-") else ""
        return value

    return _VARIABLE.sub(replace, value)


def required_variables(text: str) -> list[str]:
    """Variables the compose file insists on (`${NAME:?...}`), for the test to fill in."""
    return sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text)))


@dataclass
class Service:
    name: str
    spec: dict[str, Any]

    @property
    def ours(self) -> bool:
        """Built from our Dockerfile; the others (postgres, redis...) are third-party images."""
        return "build" in self.spec

    @property
    def one_shot(self) -> bool:
        return str(self.spec.get("restart", "")) == "no"

    @property
    def command(self) -> list[str]:
        command = self.spec["command"]
        return command if isinstance(command, list) else shlex.split(command)

    @property
    def environment(self) -> dict[str, str]:
        env = self.spec.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.partition("=")[::2] for item in env)
        return {str(k): "" if v is None else str(v) for k, v in env.items()}

    @property
    def healthcheck(self) -> list[str] | None:
        check = (self.spec.get("healthcheck") or {}).get("test")
        if not check or check == ["NONE"]:
            return None
        if isinstance(check, str):
            return ["sh", "-c", check]
        if check[0] == "CMD-SHELL":
            return ["sh", "-c", check[1]]
        return list(check[1:])  # CMD

    @property
    def mounts(self) -> list[str]:
        """Container paths of its volumes."""
        paths = []
        for volume in self.spec.get("volumes") or []:
            target = volume.get("target") if isinstance(volume, dict) else volume.split(":")[1]
            paths.append(str(target))
        return paths

    @property
    def depends_on(self) -> list[str]:
        depends = self.spec.get("depends_on") or []
        return list(depends)


def read_compose(path: Path = COMPOSE_FILE) -> dict[str, Service]:
    data = yaml.safe_load(path.read_text())  # resolves the `<<:` merge keys
    return {name: Service(name, spec or {}) for name, spec in data["services"].items()}


def in_dependency_order(services: list[Service]) -> list[Service]:
    by_name = {s.name: s for s in services}
    ordered: list[Service] = []

    def visit(service: Service, seen: tuple[str, ...] = ()) -> None:
        if service in ordered:
            return
        assert service.name not in seen, f"dependency cycle through {service.name}"
        for name in service.depends_on:
            if name in by_name:
                visit(by_name[name], (*seen, service.name))
        ordered.append(service)

    for service in services:
        visit(service)
    return ordered


_PORT_OPTION = re.compile(r"^(--port)(=?)(\d+)$")


def listening_ports(command: list[str]) -> list[int]:
    """Ports a command is told to listen on (`--port N` or `--port=N`)."""
    ports = []
    for i, word in enumerate(command):
        match = _PORT_OPTION.match(word)
        if match and match.group(2):
            ports.append(int(match.group(3)))
        elif word == "--port" and i + 1 < len(command) and command[i + 1].isdigit():
            ports.append(int(command[i + 1]))
    return ports


def rewrite_words(words: list[str], ports: Mapping[int, int],
                  mounts: Mapping[str, str]) -> list[str]:
    """Loopback for "all interfaces", this machine's ports, host folders for volumes."""
    out = []
    for word in words:
        word = word.replace("0.0.0.0", "127.0.0.1")
        for container, local in ports.items():
            word = re.sub(rf"(?<![0-9]){container}(?![0-9])", str(local), word)
        for container_path, local_path in mounts.items():
            if word == container_path or word.startswith(container_path + "/"):
                word = local_path + word[len(container_path):]
        out.append(word)
    return out


def rewrite_url(value: str, services: Mapping[str, Service], ports: Mapping[str, int],
                stand_ins: Mapping[str, str]) -> str:
    """A URL naming a compose service, pointed at this machine: our services at their local
    ports, a third-party server at the test's stand-in for its URL scheme."""
    if "://" not in value:
        return value
    parts = urlsplit(value)
    host = parts.hostname
    if host not in services:
        return value
    if services[host].ours:
        if host not in ports:
            raise AssertionError(f"{value}: service {host} listens on no port we know")
        return parts._replace(netloc=f"127.0.0.1:{ports[host]}").geturl()
    scheme = parts.scheme.split("+")[0]
    if scheme not in stand_ins:
        raise AssertionError(f"{value}: no local stand-in for a {scheme} server ({host})")
    return stand_ins[scheme]
