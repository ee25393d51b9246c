"""The worker's and beat's runtime: one per process, built by `bootstrap` after fork.
Tasks receive their resources from here; nothing reaches through `current_app`."""

from __future__ import annotations

import os

# Imported here, in the worker's parent before it forks, rather than on a task's first use: the
# SDK takes seconds to import, which would otherwise stall each pool process's first order.
import adapters.alpaca
import adapters.market_data  # noqa: F401
from bootstrap import Runtime, bootstrap
from core.settings import get_settings
from tasks.crashpoints import crash_point
from tasks.metrics import counting

_runtime: tuple[int, Runtime] | None = None


def runtime() -> Runtime:
    """This process's runtime; a forked child builds its own."""
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        built = bootstrap(
            get_settings(), application_name=f"arbiter-{os.getpid()}", pre_ping=False
        )
        # Wire the after-commit hook before the first unit of work.
        built.publisher.before_publish = lambda: crash_point("after_commit_before_publish")
        # The workers' brokerage calls are counted for /metrics.
        built.wrap_brokerage = lambda inner: counting(inner, built.redis)
        _runtime = (os.getpid(), built)
    return _runtime[1]
