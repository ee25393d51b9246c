"""The JSON API under /api/v1: one module per resource, each an APIRouter."""

from __future__ import annotations

from fastapi import APIRouter

from web.api import (
    conflicts,
    events,
    kill_switch,
    orders,
    ownership,
    positions,
    review,
    signals,
    strategies,
)

router = APIRouter(prefix="/api/v1")
for _module in (strategies, ownership, conflicts, orders, positions, review, kill_switch,
                events, signals):  # fmt: skip
    router.include_router(_module.router)
