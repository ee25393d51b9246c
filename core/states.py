"""The order state machine as data: one table of allowed moves, one function to check a move."""

from __future__ import annotations

import itertools
from enum import StrEnum

from core.errors import InvalidTransition


class OrderState(StrEnum):
    IDLE = "IDLE"
    SIGNAL_RECEIVED = "SIGNAL_RECEIVED"
    VALIDATING = "VALIDATING"
    ORDER_PENDING = "ORDER_PENDING"
    ORDER_SENT = "ORDER_SENT"
    PARTIAL_FILLED = "PARTIAL_FILLED"
    FULLY_FILLED = "FULLY_FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"


class TransitionCause(StrEnum):
    """Why an order moved: the step of the pipeline, the brokerage's word, or a person.
    Stored on every audit row; behaviour keys on it, never on who (which task) wrote it."""

    SIGNAL_INTAKE = "signal_intake"
    VALIDATION = "validation"
    CONFLICT_CHECK = "conflict_check"
    # The brokerage said so: its answer to a submit, or a report of fills, cancels, rejects.
    BROKERAGE_REPORT = "brokerage_report"
    # Arbiter's own judgement after asking the brokerage (e.g. an order it never received).
    RECONCILIATION = "reconciliation"
    RECOVERY = "recovery"
    OPERATOR = "operator"
    KILL_SWITCH = "kill_switch"
    # A strategy's or an operator's cancel of one order, carried out before the brokerage had
    # it (once the brokerage holds it, its confirmation is a BROKERAGE_REPORT).
    CANCEL_REQUEST = "cancel_request"
    # A replacement order recorded up to ORDER_PENDING before its PATCH is sent.
    REPLACEMENT = "replacement"
    # A human's audited correction of a final order (core.states.CORRECTIONS).
    CORRECTION = "correction"


# Causes that record the brokerage's own word. A CANCELLED with any other cause was decided on
# Arbiter's side (kill switch, operator) and may race a fill at the brokerage, so such orders
# stay watched for late fills.
BROKERAGE_CAUSES: frozenset[TransitionCause] = frozenset({TransitionCause.BROKERAGE_REPORT})


S = OrderState

TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    S.IDLE: frozenset({S.SIGNAL_RECEIVED}),
    S.SIGNAL_RECEIVED: frozenset({S.VALIDATING, S.REJECTED, S.CANCELLED}),
    # An operator's or strategy's cancel before the brokerage saw the order (SPEC §9: "before
    # submission: CANCELLED at once") may land while the risk checks are done.
    S.VALIDATING: frozenset({S.ORDER_PENDING, S.REJECTED, S.CANCELLED}),
    # A submit that times out keeps ORDER_PENDING: "unknown", never "rejected".
    S.ORDER_PENDING: frozenset({S.ORDER_SENT, S.REJECTED, S.FAILED, S.CANCELLED}),
    S.ORDER_SENT: frozenset({S.PARTIAL_FILLED, S.FULLY_FILLED, S.CANCELLED, S.REJECTED, S.FAILED}),
    # More fills on a partial fill are a self-move; the rest cancelled ends CANCELLED.
    S.PARTIAL_FILLED: frozenset({S.PARTIAL_FILLED, S.FULLY_FILLED, S.CANCELLED}),
    S.FULLY_FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
}

# Audited corrections by a human (`arbiter review resolve --correct`), never by the pipeline:
# the brokerage's later word on an order that Arbiter already holds as final (a fill found
# after CANCELLED or FAILED). Kept apart from TRANSITIONS, which stays the pipeline's table.
CORRECTIONS: dict[OrderState, frozenset[OrderState]] = {
    S.CANCELLED: frozenset({S.FULLY_FILLED}),
    S.FAILED: frozenset({S.FULLY_FILLED, S.CANCELLED}),
    S.REJECTED: frozenset({S.FULLY_FILLED, S.CANCELLED}),
}

TERMINAL_STATES: frozenset[OrderState] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)

# Live at the brokerage, or possibly so: what reconciliation must ask about.
OPEN_AT_BROKERAGE: frozenset[OrderState] = frozenset(
    {S.ORDER_PENDING, S.ORDER_SENT, S.PARTIAL_FILLED}
)

# Before the brokerage has seen the order: what stalled-order recovery re-drives.
BEFORE_SUBMISSION: frozenset[OrderState] = frozenset(
    {S.IDLE, S.SIGNAL_RECEIVED, S.VALIDATING, S.ORDER_PENDING}
)


def is_terminal(state: OrderState) -> bool:
    return state in TERMINAL_STATES


def can_transition(source: OrderState, target: OrderState) -> bool:
    return target in TRANSITIONS[source]


def check_transition(source: OrderState, target: OrderState) -> None:
    """Raise InvalidTransition unless `source -> target` is in the table."""
    if not can_transition(source, target):
        raise InvalidTransition(source, target)


def check_correction(source: OrderState, target: OrderState) -> None:
    """Raise InvalidTransition unless `source -> target` is an allowed correction."""
    if target not in CORRECTIONS.get(source, frozenset()):
        raise InvalidTransition(source, target)


def is_valid_path(states: list[OrderState]) -> bool:
    """True when consecutive states are all allowed moves (an audit trail check)."""
    return all(can_transition(a, b) for a, b in itertools.pairwise(states))
