"""py-spy over the worker pool processes during one closed loop (`--profile`).

Each pool child is sampled with `--idle` (waits on Postgres, Redis and the brokerage count:
they are where a signal's wall time goes), in py-spy's raw collapsed-stack format, which
`summarise` folds into inclusive shares per function and per cost category.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# First match wins: the innermost frame that names a category decides it.
CATEGORIES = (
    ("waiting for the next task", ("billiard/pool.py", "billiard/connection.py")),
    ("HTTP to the brokerage", ("requests/", "urllib3/", "http/client.py", "alpaca/")),
    ("Redis (broker, publish)", ("redis/", "kombu/")),
    ("Postgres driver round trips", ("psycopg/",)),
    ("SQLAlchemy ORM/Core", ("sqlalchemy/",)),
    ("logging", ("logging/",)),
    ("JSON / pydantic", ("json/", "pydantic")),
    ("Celery machinery", ("celery/",)),
)


class Profiler:
    def __init__(self, out_dir: Path, rate: int = 100, idle: bool = True) -> None:
        self.idle = idle  # wall time (waits included) or CPU time only
        self.out_dir = out_dir
        self.rate = rate
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    @staticmethod
    def executable() -> str | None:
        """py-spy on PATH, or next to this interpreter (a venv's bin that is not on PATH)."""
        return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable)
                                                                          .parent))

    @classmethod
    def available(cls) -> bool:
        return cls.executable() is not None

    def start(self, pids: list[int]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        exe = self.executable() or "py-spy"
        for pid in pids:
            out = self.out_dir / f"worker-{pid}.txt"
            idle = ["--idle"] if self.idle else []
            proc = subprocess.Popen([exe, "record", "--pid", str(pid), *idle, "--format", "raw",
                                     "--rate", str(self.rate), "-o", str(out)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append((proc, out))

    def stop(self) -> list[Path]:
        for proc, _ in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return [out for _, out in self.procs if out.exists()]


def _frames(stack: str) -> list[str]:
    return stack.split(";")


def summarise(files: list[Path], top: int = 30) -> str:
    """Inclusive share of samples per category and per Arbiter function (file:function)."""
    total = 0
    categories: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = _frames(stack)
            chosen = "other (Python in Arbiter/bench code)"
            for frame in reversed(frames):
                hit = next((name for name, marks in CATEGORIES
                            if any(m in frame for m in marks)), None)
                if hit:
                    chosen = hit
                    break
            categories[chosen] += count
            seen = set()
            for frame in frames:
                if any(f"({pkg}/" in frame for pkg in ("tasks", "db", "core")):
                    name = frame.split(" (")[0] + " (" + frame.split("(")[-1].split(":")[0] + ")"
                    if name not in seen:
                        seen.add(name)
                        functions[name] += count
    if not total:
        return "no samples (py-spy could not attach?)"
    lines = [f"{total} samples over {len(files)} pool processes", "", "by category (innermost):"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in categories.most_common()]
    lines += ["", "Arbiter functions (inclusive):"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in functions.most_common(top)]
    return "\n".join(lines)
