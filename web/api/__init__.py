"""The JSON API under /api/v1: one module per resource, each an APIRouter."""

from __future__ import annotations

import importlib

from fastapi import APIRouter

RESOURCES = ("strategies", "ownership", "conflicts", "orders", "positions", "review",
             "kill_switch", "events", "signals")  # fmt: skip

router = APIRouter(prefix="/api/v1")
for _name in RESOURCES:
    try:
        _module = importlib.import_module(f"web.api.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"web.api.{_name}":
            raise
        continue
    router.include_router(_module.router)
