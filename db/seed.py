"""Idempotent seeding of the default strategies."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.strategies import DEFAULT_STRATEGIES
from db.models import Strategy


def seed_default_strategies(session: Session) -> int:
    """Insert the defaults that are missing; never touches a strategy a user changed.
    Returns how many were inserted."""
    inserted = 0
    for spec in DEFAULT_STRATEGIES:
        new_id = session.scalar(
            insert(Strategy)
            .values(
                name=spec.name,
                display_name=spec.display_name,
                priority=spec.priority,
                horizon=spec.horizon.value,
                config=spec.config,
            )
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(Strategy.id)
        )
        inserted += new_id is not None
    return inserted
