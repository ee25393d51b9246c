"""Event types and the event envelope: immutable facts, named in the past tense.

Every event travels as the same JSON envelope, on Redis pub/sub and in the durable history; its
payload is a JSON object whose shape each type's model in core/event_payloads.py defines.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from core import event_payloads as p
from core.errors import InvalidInput
from core.states import OrderState

SCHEMA_VERSION = 1


class EventType(StrEnum):
    # orders, signals, positions, risk, the war room, the system
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
    # conflicts and ownership
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


_T = EventType
# Each type's payload model; a tuple names the models a type's payload may take, told apart by
# their `kind` field.
PAYLOAD_MODELS: dict[EventType, tuple[type[p.EventPayload], ...]] = {
    **dict.fromkeys(
        (
            _T.SIGNAL_RECEIVED,
            _T.SIGNAL_VALIDATED,
            _T.SIGNAL_REJECTED,
            _T.ORDER_SENT,
            _T.ORDER_PARTIALLY_FILLED,
            _T.ORDER_FILLED,
            _T.ORDER_CANCELLED,
            _T.ORDER_REJECTED,
            _T.ORDER_FAILED,
        ),
        (p.OrderTransitioned,),
    ),
    _T.ORDER_NEEDS_REVIEW: (p.OrderNeedsReview,),
    _T.ORDER_CANCEL_REQUESTED: (p.OrderCancelRequested,),
    _T.ORDER_REPLACED: (p.OrderReplaced,),
    _T.ORDER_CORRECTED: (p.OrderCorrected,),
    _T.RISK_LIMIT_EXCEEDED: (p.RiskLimitExceeded,),
    **dict.fromkeys(
        (
            _T.CONFLICT_DETECTED,
            _T.ORDER_BLOCKED_BY_CONFLICT,
            _T.PRIORITY_OVERRIDE,
            _T.CONFLICT_RESOLVED,
        ),
        (p.ConflictDecided,),
    ),
    _T.OWNERSHIP_ACQUIRED: (p.OwnershipAcquired,),
    _T.OWNERSHIP_TRANSFERRED: (p.OwnershipTransferred,),
    _T.OWNERSHIP_RELEASED: (p.OwnershipReleased,),
    **dict.fromkeys(
        (_T.POSITION_OPENED, _T.POSITION_UPDATED, _T.POSITION_CLOSED), (p.PositionChanged,)
    ),
    _T.POSITION_STOP_LOSS_TRIGGERED: (p.StopLossTriggered,),
    _T.POSITION_ADJUSTED: (p.PositionAdjusted,),
    _T.STRATEGY_ACTIVATED: (p.StrategyToggled,),
    _T.STRATEGY_DEACTIVATED: (p.StrategyToggled,),
    _T.STRATEGY_UPDATED: (p.StrategyUpdated,),
    _T.KILL_SWITCH_ACTIVATED: (p.KillSwitchToggled,),
    _T.KILL_SWITCH_DEACTIVATED: (p.KillSwitchToggled,),
    _T.RECONCILIATION_MISMATCH: (p.UnknownOrderMismatch, p.PositionMismatch),
    _T.RECOVERY_STARTED: (p.RecoveryStarted,),
    _T.RECOVERY_COMPLETED: (p.RecoveryCompleted,),
    _T.SYSTEM_STARTED: (p.SystemChanged,),
    _T.SYSTEM_STOPPED: (p.SystemChanged,),
    _T.ERROR_OCCURRED: (p.ErrorOccurred,),
    _T.RISK_ALERT: (p.ExternalPayload,),
    _T.DEBATE_STARTED: (p.ExternalPayload,),
    _T.DEBATE_ENDED: (p.ExternalPayload,),
    _T.CONSENSUS_REACHED: (p.ExternalPayload,),
}


def _adapter(models: tuple[type[p.EventPayload], ...]) -> TypeAdapter[Any]:
    if len(models) == 1:
        return TypeAdapter(models[0])
    union: Any = Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007
    return TypeAdapter(union)


_ADAPTERS: dict[EventType, TypeAdapter[Any]] = {
    event_type: _adapter(models) for event_type, models in PAYLOAD_MODELS.items()
}


def parse_payload(event_type: EventType, payload: Any) -> p.EventPayload:
    """`payload` read through its type's model; InvalidInput says which field is wrong."""
    try:
        parsed: p.EventPayload = _ADAPTERS[event_type].validate_python(payload)
    except ValidationError as exc:
        raise InvalidInput(f"{event_type.value} payload is invalid: {exc}") from None
    return parsed


def payload_schemas() -> dict[str, dict[str, Any]]:
    """Each type's wire name and the JSON Schema of its payload."""
    return {t.value: _ADAPTERS[t].json_schema() for t in EventType}


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

    @classmethod
    def of(cls, event_type: EventType, payload: p.EventPayload, **envelope: Any) -> Event:
        """An event whose payload is built through its type's model (TypeError for a model
        that does not belong to `event_type`)."""
        if not isinstance(payload, PAYLOAD_MODELS[event_type]):
            raise TypeError(f"{type(payload).__name__} is not a payload of {event_type.value}")
        return cls(type=event_type, payload=payload.to_wire(), **envelope)

    def data(self) -> p.EventPayload:
        """The payload read through its type's model."""
        return parse_payload(self.type, self.payload)

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
