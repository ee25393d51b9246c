"""Each event type's payload model: registered, refusing what it does not know, and what the
seeds' consumers read."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.brokerage import Side
from core.conflicts import Resolution
from core.errors import InvalidInput
from core.event_payloads import (
    ConflictDecided,
    ExternalPayload,
    OwnershipAcquired,
    OwnershipTransferred,
    PositionChanged,
    PositionMismatch,
    UnknownOrderMismatch,
)
from core.events import (
    EXTERNAL_EVENT_TYPES,
    PAYLOAD_MODELS,
    Event,
    EventType,
    parse_payload,
    payload_schemas,
)

CONFLICT = ConflictDecided(
    ticker="NVDA",
    requesting_strategy_id=3,
    requesting_strategy_name="trading",
    requesting_priority=50,
    owning_strategy_id=1,
    owning_strategy_name="long_term",
    owning_priority=100,
    action=Side.SELL,
    resolution=Resolution.BLOCKED,
    reasoning="long_term holds NVDA locked",
)


def test_every_event_type_has_a_payload_model() -> None:
    assert set(PAYLOAD_MODELS) == set(EventType)


def test_the_schema_names_every_type_by_its_wire_name() -> None:
    schemas = payload_schemas()
    assert sorted(schemas) == sorted(t.value for t in EventType)
    assert schemas["conflict_detected"]["properties"]["requesting_strategy_name"]
    assert "oneOf" in schemas["reconciliation_mismatch"]


def test_stop_loss_travels_as_position_stop_loss_triggered() -> None:
    assert EventType.POSITION_STOP_LOSS_TRIGGERED.value == "position_stop_loss_triggered"


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (
            ConflictDecided,
            "ticker requesting_strategy_id requesting_strategy_name requesting_priority "
            "owning_strategy_id owning_strategy_name owning_priority action resolution reasoning",
        ),
        (
            OwnershipTransferred,
            "ticker from_strategy_id from_strategy_name to_strategy_id to_strategy_name reason "
            "ownership_id",
        ),
        (
            OwnershipAcquired,
            "ticker strategy_id strategy_name ownership_type reasoning ownership_id",
        ),
    ],
)
def test_payloads_carry_the_seeds_field_names(model: type[object], fields: str) -> None:
    assert set(fields.split()) <= set(model.model_fields)  # type: ignore[attr-defined]


def test_the_wire_form_is_a_json_object_with_decimals_as_strings() -> None:
    payload = PositionChanged(
        side=Side.BUY,
        fill_quantity=Decimal("2.5"),
        fill_price=Decimal("10"),
        quantity=Decimal("2.5"),
        avg_cost=Decimal("10"),
        realized_pnl=Decimal(0),
    )
    event = Event.of(EventType.POSITION_OPENED, payload, ticker="AAPL")
    assert event.payload["fill_quantity"] == "2.5"
    assert event.payload["side"] == "buy"
    assert event.data() == payload


def test_conflict_payload_reads_back_as_its_model() -> None:
    event = Event.of(EventType.ORDER_BLOCKED_BY_CONFLICT, CONFLICT)
    assert Event.from_json(event.to_json()).data() == CONFLICT


def test_a_model_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="not a payload of order_filled"):
        Event.of(EventType.ORDER_FILLED, CONFLICT)


def test_an_unknown_field_in_an_arbiter_payload_is_refused() -> None:
    wire = {**CONFLICT.to_wire(), "requesting_strategy": "trading"}
    with pytest.raises(InvalidInput, match="conflict_detected payload is invalid"):
        parse_payload(EventType.CONFLICT_DETECTED, wire)


def test_a_missing_field_is_refused() -> None:
    wire = CONFLICT.to_wire()
    del wire["reasoning"]
    with pytest.raises(InvalidInput, match="reasoning"):
        parse_payload(EventType.CONFLICT_RESOLVED, wire)


def test_a_wrong_value_is_refused() -> None:
    with pytest.raises(InvalidInput, match="resolution"):
        parse_payload(EventType.PRIORITY_OVERRIDE, {**CONFLICT.to_wire(), "resolution": "maybe"})


@pytest.mark.parametrize("event_type", sorted(EXTERNAL_EVENT_TYPES))
def test_external_types_accept_any_json_object(event_type: EventType) -> None:
    parsed = parse_payload(event_type, {"topic": "NVDA", "agents": ["bull", "bear"]})
    assert isinstance(parsed, ExternalPayload)
    assert parsed.model_dump()["agents"] == ["bull", "bear"]


def test_a_reconciliation_mismatch_is_told_apart_by_its_kind() -> None:
    position = PositionMismatch(
        reason="differs", ours=Decimal(0), theirs=Decimal(7), by_strategy={}
    )
    order = UnknownOrderMismatch(
        reason="stray",
        client_order_id="x-1",
        brokerage_order_id="b-1",
        symbol="IBM",
        side=Side.BUY,
        quantity=Decimal(1),
        filled_quantity=Decimal(0),
        status="new",
    )
    for payload in (position, order):
        parsed = parse_payload(EventType.RECONCILIATION_MISMATCH, payload.to_wire())
        assert parsed == payload
    with pytest.raises(InvalidInput):
        parse_payload(EventType.RECONCILIATION_MISMATCH, {"kind": "other", "reason": "?"})


def test_a_transition_payload_carries_its_cause() -> None:
    from core.event_payloads import OrderTransitioned
    from core.states import OrderState, TransitionCause

    payload = OrderTransitioned(from_state=OrderState.ORDER_SENT,
                                to_state=OrderState.CANCELLED, reason="kill switch",
                                filled_quantity=Decimal(0), avg_fill_price=None,
                                cause=TransitionCause.KILL_SWITCH)
    assert payload.to_wire()["cause"] == "kill_switch"
    assert payload.to_wire()["to_state"] == "CANCELLED"


def test_a_payload_is_immutable() -> None:
    with pytest.raises(ValueError, match="frozen"):
        CONFLICT.reasoning = "changed"  # type: ignore[misc]


def test_ownership_acquired_says_primary_by_default() -> None:
    acquired = OwnershipAcquired(ticker="NVDA", strategy_id=1, strategy_name="long_term",
                                 reasoning="NVDA has no owner", ownership_id=7, locked_until=None)
    assert acquired.to_wire()["ownership_type"] == "primary"
