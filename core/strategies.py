"""Strategies as the domain knows them, and the four that every installation starts with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Horizon(StrEnum):
    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"


@dataclass(frozen=True)
class StrategySpec:
    name: str
    display_name: str
    priority: int
    horizon: Horizon
    config: dict[str, Any] = field(default_factory=dict)


DEFAULT_STRATEGIES: tuple[StrategySpec, ...] = (
    StrategySpec("long_term", "Long-term", 100, Horizon.LONG, {"ownership_lock_days": 90}),
    StrategySpec("dividend", "Dividend", 90, Horizon.LONG, {"ownership_lock_days": 365}),
    StrategySpec("trading", "Trading", 50, Horizon.SHORT, {"ownership_lock_days": 0}),
    StrategySpec("aggressive", "Aggressive", 30, Horizon.SHORT, {"ownership_lock_days": 0}),
)


def lock_until(config: dict[str, Any], acquired_at: datetime) -> datetime | None:
    """When an ownership acquired now stops being locked (None: not locked)."""
    days = config.get("ownership_lock_days") or 0
    return acquired_at + timedelta(days=float(days)) if days else None
