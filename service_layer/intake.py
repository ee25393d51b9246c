"""Intake: a signal becomes an order (SIGNAL_RECEIVED), or a refused one is recorded REJECTED.

A repeated (strategy, signal_id) maps to the same row, so a redelivered message creates nothing.

Refused at intake, with the reason on the REJECTED order: a malformed signal, an unknown
strategy, a signal not signed by its strategy (`unauthenticated`, service_layer/
authentication.py), and a signal the database cannot store (a non-transient error).

Bounded storage: before anything is written, the signal is counted against its bucket for the
last minute (by the database's clock): its strategy's (`IntakeBounds.per_minute`), or, for
everything that names no known, authenticated strategy, one shared untrusted bucket
(`untrusted_per_minute`). Over the bound, nothing is written and intake returns None (the
chain stops). The count takes no lock (a lock would make every intake of a strategy wait for
the one before to commit), so intakes running at the same moment may each see room for the
last place: the bound holds to within the number of intake processes. Error texts are cut to
MAX_ERROR characters.

A signal the database will not store (a constraint, a value out of range) aborts the
transaction: `intake` raises Unstorable, and the caller records the refusal in a fresh one
(`refuse_unstorable`), so the common path needs no savepoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, literal, select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from core.errors import ArbiterError, InvalidSignal
from core.signals import (
    SIGNAL_ID_PATTERN,
    STRATEGY_PATTERN,
    Signal,
    client_order_id_for,
    is_name,
)
from core.signing import split
from core.states import OrderState
from core.states import TransitionCause as C
from db.clock import DB_EPOCH
from db.engine import Database
from db.models import Order, Strategy
from db.order_manager import OrderManager, locked_orders
from service_layer.authentication import UNAUTHENTICATED, verify_signal

log = logging.getLogger(__name__)
S = OrderState
MAX_ERROR = 500  # characters of an error text kept (it is stored on the order and its events)
UNTRUSTED = "untrusted"


class Unstorable(ArbiterError):
    """The database refused the signal for good; the transaction is lost (roll it back)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IntakeBounds:
    per_minute: int = 1200
    untrusted_per_minute: int = 60
    signal_max_age_s: float = 3600.0


def intake(
    session: Session,
    raw: Any,
    *,
    actor: str,
    message_id: str,
    bounds: IntakeBounds = IntakeBounds(),
) -> int | None:
    """Persist a signal as an order (SIGNAL_RECEIVED), or record a refused one REJECTED.
    A repeated (strategy, signal_id) returns the existing order and creates nothing. None
    when the signal's bucket is full: nothing was written."""
    manager = OrderManager(session)
    body, signed_at, signature = split(raw) if isinstance(raw, dict) else (raw, None, None)
    try:
        signal = Signal.parse(body)
    except InvalidSignal as exc:
        if not _within(session, None, bounds.untrusted_per_minute):
            return None
        strategy_name, signal_id = _identity_of(raw, message_id)
        return _refuse(manager, raw, strategy_name, signal_id, f"malformed signal: {exc}", actor)

    existing_id, strategy, db_epoch = _look_up(session, signal)
    if existing_id is not None:
        return existing_id
    if strategy is None:
        if not _within(session, None, bounds.untrusted_per_minute):
            return None
        order, created = manager.create_from_signal(signal, None, actor=actor)
        if created:
            manager.transition(
                order,
                S.REJECTED,
                reason=f"unknown strategy {signal.strategy!r}",
                actor=actor,
                cause=C.SIGNAL_INTAKE,
            )
        return order.id
    why = verify_signal(
        session,
        strategy,
        signal,
        signed_at,
        signature,
        max_age_s=bounds.signal_max_age_s,
        now=float(db_epoch),
    )
    if why is not None:
        if not _within(session, None, bounds.untrusted_per_minute):
            return None
        # Kept apart from the strategy's own signal ids: a forgery cannot take one.
        signal_id = f"{UNAUTHENTICATED}-{message_id}"[:128]
        return _refuse(manager, raw, signal.strategy, signal_id, f"{UNAUTHENTICATED}: {why}", actor)
    if not _within(session, strategy, bounds.per_minute):
        return None
    try:
        order, _created = manager.create_from_signal(signal, strategy, actor=actor)
        return order.id
    except (OperationalError, InterfaceError):
        raise  # transient: the task retries
    except DBAPIError as exc:
        # The database will never take this signal (a constraint, a value out of range).
        cause = exc.orig or exc
        first_line = (str(cause).strip().splitlines() or [""])[0]
        raise Unstorable(f"cannot be stored: {type(cause).__name__}: {first_line}") from exc


def intake_signal(
    database: Database,
    raw: Any,
    *,
    actor: str,
    message_id: str,
    bounds: IntakeBounds = IntakeBounds(),
    on_order: Callable[[Order], None] = lambda _order: None,
) -> int | None:
    """`intake` in a transaction of its own; a signal it finds Unstorable is refused in a
    second one. `on_order` sees the recorded order before the commit (for log context)."""
    try:
        with database.unit_of_work() as uow:
            order_id = intake(uow.session, raw, actor=actor, message_id=message_id, bounds=bounds)
            for order in locked_orders(uow.session):
                on_order(order)
            uow.commit()
            return order_id
    except Unstorable as exc:  # that transaction is lost
        with database.unit_of_work() as uow:
            order_id = refuse_unstorable(
                uow.session, raw, exc.reason, actor=actor, message_id=message_id
            )
            uow.commit()
            return order_id


def refuse_unstorable(
    session: Session, raw: Any, reason: str, *, actor: str, message_id: str
) -> int:
    """Record, in a fresh transaction, the signal `intake` found Unstorable: REJECTED with the
    reason, so that it is neither retried nor resent for ever."""
    body = split(raw)[0] if isinstance(raw, dict) else raw
    strategy = body.get("strategy") if isinstance(body, dict) else None
    name = str(strategy) if is_name(STRATEGY_PATTERN, strategy) else "unknown"
    log.warning("a signal of %s was refused by the database: %s", name, reason)
    signal_id = f"unstorable-{message_id}"[:128]
    return _refuse(OrderManager(session), raw, name, signal_id, reason, actor)


def _refuse(
    manager: OrderManager, raw: Any, strategy_name: str, signal_id: str, reason: str, actor: str
) -> int:
    reason = reason if len(reason) <= MAX_ERROR else reason[: MAX_ERROR - 3] + "..."
    order, created = manager.create_malformed(
        client_order_id=client_order_id_for(strategy_name, signal_id),
        strategy_name=strategy_name,
        signal_id=signal_id,
        raw=_json_safe(raw),
        error=reason,
        actor=actor,
    )
    if created:
        manager.transition(order, S.REJECTED, reason=reason, actor=actor, cause=C.SIGNAL_INTAKE)
    return order.id


# The hot path's statements are built once: constructing them cost more than running them.
_LOOK_UP = (
    select(
        select(Order.id).where(Order.client_order_id == bindparam("coid")).scalar_subquery(),
        Strategy,
        DB_EPOCH,
    )
    .select_from(select(literal(1).label("one")).subquery())
    .outerjoin(Strategy, Strategy.name == bindparam("strategy"))
)
_RECENT = select(Order.id).where(Order.created_at > func.now() - text("interval '1 minute'"))
_COUNT_TRUSTED = select(func.count()).select_from(
    _RECENT.where(Order.strategy_name == bindparam("name"), Order.strategy_id == bindparam("id"))
    .limit(bindparam("bound"))
    .subquery()
)
_COUNT_UNTRUSTED = select(func.count()).select_from(
    _RECENT.where(Order.strategy_id.is_(None)).limit(bindparam("bound")).subquery()
)


def _look_up(session: Session, signal: Signal) -> tuple[int | None, Strategy | None, float]:
    """In one round trip: the order this signal made already (a redelivery), the strategy it
    names, and the database's clock (for the signature's age)."""
    row = session.execute(
        _LOOK_UP, {"coid": signal.client_order_id, "strategy": signal.strategy}
    ).one()
    return row[0], row[1], float(row[2])


def _within(session: Session, strategy: Strategy | None, per_minute: int) -> bool:
    """Room in the bucket for one more signal this minute (counting stops at the bound, so a
    flood costs no more to count than the bound itself)."""
    bucket = f"intake:{strategy.id if strategy is not None else UNTRUSTED}"
    if strategy is None:
        counted = session.scalar(_COUNT_UNTRUSTED, {"bound": per_minute})
    else:
        params = {"name": strategy.name, "id": strategy.id, "bound": per_minute}
        counted = session.scalar(_COUNT_TRUSTED, params)
    count = int(counted or 0)
    if count >= per_minute:
        log.warning(
            "intake: %s is over %d signals a minute: dropped unrecorded", bucket, per_minute
        )
        return False
    return True


def _identity_of(raw: Any, message_id: str) -> tuple[str, str]:
    """Best-effort key for a malformed signal, so that a redelivery (or the strategy sending
    it again) maps to the same row."""
    strategy = raw.get("strategy") if isinstance(raw, dict) else None
    signal_id = raw.get("signal_id") if isinstance(raw, dict) else None
    name = str(strategy) if is_name(STRATEGY_PATTERN, strategy) else "unknown"
    key = str(signal_id) if is_name(SIGNAL_ID_PATTERN, signal_id) else f"malformed-{message_id}"
    return name, key[:128]


def _json_safe(raw: Any) -> Any:
    try:
        text_ = json.dumps(raw, default=str)
    except (TypeError, ValueError):
        text_ = json.dumps(repr(raw))
    return json.loads(text_) if len(text_) <= 10_000 else text_[:10_000]
