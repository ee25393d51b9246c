"""Event types and the event envelope: immutable facts, named in the past tense.

Every event travels as the same JSON envelope, on Redis pub/sub and in the durable history.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import InvalidInput
from core.states import OrderState

SCHEMA_VERSION = 1


class EventType(StrEnum):
    # the reports' 23
    ORDER_SENT = "order_sent"
    ORDER_FILLED = "order_filled"
    ORDER_CANCELLED = "order_cancelled"
    ORDER_REJECTED = "order_rejected"
    ORDER_FAILED = "order_failed"
    SIGNAL_RECEIVED = "signal_received"
    SIGNAL_VALIDATED = "signal_validated"
    SIGNAL_REJECTED = "signal_rejected"
    POSITION_OPENED = "position_opened"
    POSITION_CLOSED = "position_closed"
    POSITION_UPDATED = "position_updated"
    POSITION_STOP_LOSS_TRIGGERED = "position_stop_loss_triggered"
    RISK_LIMIT_EXCEEDED = "risk_limit_exceeded"
    KILL_SWITCH_ACTIVATED = "kill_switch_activated"
    RISK_ALERT = "risk_alert"
    DEBATE_STARTED = "debate_started"
    DEBATE_ENDED = "debate_ended"
    CONSENSUS_REACHED = "consensus_reached"
    SYSTEM_STARTED = "system_started"
    SYSTEM_STOPPED = "system_stopped"
    RECOVERY_STARTED = "recovery_started"
    RECOVERY_COMPLETED = "recovery_completed"
    ERROR_OCCURRED = "error_occurred"
    # the conflict five
    CONFLICT_DETECTED = "conflict_detected"
    ORDER_BLOCKED_BY_CONFLICT = "order_blocked_by_conflict"
    PRIORITY_OVERRIDE = "priority_override"
    OWNERSHIP_ACQUIRED = "ownership_acquired"
    OWNERSHIP_TRANSFERRED = "ownership_transferred"
    # Arbiter's own
    STRATEGY_ACTIVATED = "strategy_activated"
    STRATEGY_DEACTIVATED = "strategy_deactivated"
    STRATEGY_UPDATED = "strategy_updated"  # priority, lock, limits or name changed
    CONFLICT_RESOLVED = "conflict_resolved"
    OWNERSHIP_RELEASED = "ownership_released"
    ORDER_PARTIALLY_FILLED = "order_partially_filled"
    ORDER_NEEDS_REVIEW = "order_needs_review"
    RECONCILIATION_MISMATCH = "reconciliation_mismatch"
    KILL_SWITCH_DEACTIVATED = "kill_switch_deactivated"
    # order control (SPEC §9)
    ORDER_CANCEL_REQUESTED = "order_cancel_requested"
    ORDER_REPLACED = "order_replaced"
    ORDER_CORRECTED = "order_corrected"
    POSITION_ADJUSTED = "position_adjusted"


# Events that processes outside Arbiter (strategies, an AI war room) may publish themselves.
EXTERNAL_EVENT_TYPES: frozenset[EventType] = frozenset(
    {
        EventType.DEBATE_STARTED,
        EventType.DEBATE_ENDED,
        EventType.CONSENSUS_REACHED,
        EventType.RISK_ALERT,
        EventType.POSITION_STOP_LOSS_TRIGGERED,
        EventType.ERROR_OCCURRED,
        EventType.SYSTEM_STARTED,
        EventType.SYSTEM_STOPPED,
    }
)


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """The envelope. `payload` carries what is specific to the type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: EventType
    occurred_at: datetime = Field(default_factory=_now)
    source: str = "arbiter"
    order_id: int | None = None
    client_order_id: str | None = None
    strategy: str | None = None
    ticker: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @field_validator("occurred_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        return value.astimezone(UTC)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        return cls.model_validate_json(raw)


def transition_event_type(source: OrderState, target: OrderState) -> EventType | None:
    """The event that announces an order entering `target` from `source` (None: internal step)."""
    S = OrderState
    if target is S.REJECTED:
        # Before the brokerage saw it, the signal was rejected; after, the order was.
        return (
            EventType.SIGNAL_REJECTED
            if source in (S.SIGNAL_RECEIVED, S.VALIDATING)
            else EventType.ORDER_REJECTED
        )
    return {
        S.SIGNAL_RECEIVED: EventType.SIGNAL_RECEIVED,
        # Entering VALIDATING means the risk rules passed; the conflict check follows.
        S.VALIDATING: EventType.SIGNAL_VALIDATED,
        S.ORDER_SENT: EventType.ORDER_SENT,
        S.PARTIAL_FILLED: EventType.ORDER_PARTIALLY_FILLED,
        S.FULLY_FILLED: EventType.ORDER_FILLED,
        S.CANCELLED: EventType.ORDER_CANCELLED,
        S.FAILED: EventType.ORDER_FAILED,
    }.get(target)


def channel_for(event_type: EventType | str, prefix: str = "arbiter.events") -> str:
    """The pub/sub channel of one type: `arbiter.events.order_filled`. Subscribe to
    `arbiter.events.*` (PSUBSCRIBE) for all of them."""
    return f"{prefix}.{EventType(event_type).value}"


def parse_event_type(value: EventType | str) -> EventType:
    """`order_filled`, `ORDER_FILLED` or the enum member; InvalidInput names the allowed ones."""
    if isinstance(value, EventType):
        return value
    name = str(value).strip().lower()
    try:
        return EventType(name)
    except ValueError:
        allowed = ", ".join(sorted(member.value for member in EventType))
        raise InvalidInput(f"unknown event type {value!r}; known types: {allowed}") from None
