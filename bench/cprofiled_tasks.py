"""Arbiter's worker app with cProfile in each pool process (bench use only):
`celery -A bench.cprofiled_tasks worker`, with ARBITER_BENCH_PROFILE_DIR set; each pool process
writes <dir>/pool-<pid>.prof when it exits."""

from __future__ import annotations

import cProfile
import os
import time
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from tasks.app import get_app

app = get_app()

_profile: cProfile.Profile | None = None


@worker_process_init.connect
def _start(**_: Any) -> None:
    global _profile
    _profile = cProfile.Profile(time.process_time)
    _profile.enable()


@worker_process_shutdown.connect
def _stop(**_: Any) -> None:
    if _profile is not None:
        _profile.disable()
        out = os.environ.get("ARBITER_BENCH_PROFILE_DIR", "/tmp")
        _profile.dump_stats(os.path.join(out, f"pool-{os.getpid()}.prof"))
