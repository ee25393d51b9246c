"""Proven strategy identity: a signal counts as its strategy's only when signed with that
strategy's key (core/signing.py), checked against the database's clock.

Every way in verifies here: the Celery intake (service_layer/intake.py) and the HTTP intake
of web/ (which calls `verify_signal` with the parsed signal and the strategy its token is
bound to, before it enqueues or writes anything).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.signals import Signal
from core.signing import why_not_authentic
from db.clock import db_epoch
from db.models import Strategy

UNAUTHENTICATED = "unauthenticated"


def verify_signal(
    session: Session,
    strategy: Strategy,
    signal: Signal,
    signed_at: Any,
    signature: Any,
    *,
    max_age_s: float,
    now: float | None = None,
) -> str | None:
    """None when `signature` proves `signal` comes from `strategy`; else why not
    ("unsigned", "stale: ...", "bad signature", ...). `now`: the database's clock in Unix
    seconds, when the caller read it already."""
    if signal.strategy != strategy.name:
        return f"signal names {signal.strategy!r}, not {strategy.name!r}"
    return why_not_authentic(
        strategy.signing_key,
        signal.to_message(),
        signed_at,
        signature,
        now=db_epoch(session) if now is None else now,
        max_age_s=max_age_s,
    )
