"""Celery side of Arbiter. `celery -A tasks worker` finds the app here, built on first use so
that importing the light client (`strategy_client.client`) never configures a worker."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from tasks.app import get_app

        return get_app()
    raise AttributeError(name)
