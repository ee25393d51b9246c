"""The event envelope, event type names and channels, brokerage statuses, and ownership locks:
small pure rules that the rest of Arbiter leans on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from core.brokerage import state_for_status
from core.errors import BrokerageProtocolError, InvalidInput
from core.event_payloads import KillSwitchToggled
from core.events import Event, EventType, channel_for, parse_event_type
from core.states import OrderState
from core.strategies import DEFAULT_STRATEGIES, lock_until

S = OrderState
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def test_an_envelope_round_trips_through_json() -> None:
    event = Event.of(EventType.KILL_SWITCH_ACTIVATED, KillSwitchToggled(reason="drill"),
                     source="cli", ticker="AAPL")
    assert Event.from_json(event.to_json()) == event


def test_an_envelope_gets_an_id_and_a_utc_time_of_its_own() -> None:
    first, second = Event(type=EventType.RISK_ALERT), Event(type=EventType.RISK_ALERT)
    assert first.id != second.id
    assert first.occurred_at.tzinfo is not None and first.source == "arbiter"


def test_a_naive_occurred_at_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        Event(type=EventType.RISK_ALERT, occurred_at=datetime(2026, 1, 1))


def test_occurred_at_is_stored_in_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    event = Event(type=EventType.RISK_ALERT, occurred_at=datetime(2026, 1, 1, 7, tzinfo=eastern))
    assert event.occurred_at == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)


def test_an_envelope_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        Event(type=EventType.RISK_ALERT, colour="red")  # type: ignore[call-arg]


def test_an_envelope_is_immutable() -> None:
    event = Event(type=EventType.RISK_ALERT)
    with pytest.raises(ValidationError):
        event.source = "someone else"  # type: ignore[misc]


def test_event_type_names_are_lower_snake_case() -> None:
    assert all(t.value == t.name.lower() for t in EventType)


def test_an_event_type_parses_from_its_wire_name_or_its_name() -> None:
    assert parse_event_type("order_filled") is EventType.ORDER_FILLED
    assert parse_event_type(" ORDER_FILLED ") is EventType.ORDER_FILLED
    assert parse_event_type(EventType.ORDER_FILLED) is EventType.ORDER_FILLED


def test_an_unknown_event_type_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match=r"unknown event type 'order_teleported'.*order_filled"):
        parse_event_type("order_teleported")


def test_each_type_has_its_own_channel_under_the_prefix() -> None:
    assert channel_for(EventType.ORDER_FILLED) == "arbiter.events.order_filled"
    assert channel_for("conflict_detected", prefix="x") == "x.conflict_detected"


def test_open_brokerage_statuses_map_to_order_sent() -> None:
    assert {state_for_status(s) for s in ("new", "accepted", "pending_new", "held")} == {
        S.ORDER_SENT}


def test_a_partial_fill_and_a_fill_map_to_their_states() -> None:
    assert state_for_status("partially_filled") is S.PARTIAL_FILLED
    assert state_for_status("filled") is S.FULLY_FILLED


def test_expired_and_done_for_day_end_as_cancelled() -> None:
    assert {state_for_status(s) for s in ("canceled", "expired", "done_for_day")} == {
        S.CANCELLED}


def test_statuses_are_case_insensitive() -> None:
    assert state_for_status("REJECTED") is S.REJECTED


def test_an_unknown_brokerage_status_is_a_protocol_error() -> None:
    with pytest.raises(BrokerageProtocolError, match="unknown brokerage order status 'lost'"):
        state_for_status("lost")


def test_a_lock_of_n_days_ends_n_days_after_acquiring() -> None:
    assert lock_until({"ownership_lock_days": 90}, NOW) == NOW + timedelta(days=90)


def test_no_lock_configured_means_not_locked() -> None:
    assert lock_until({}, NOW) is None
    assert lock_until({"ownership_lock_days": 0}, NOW) is None


def test_a_fractional_lock_is_honoured() -> None:
    assert lock_until({"ownership_lock_days": 0.5}, NOW) == NOW + timedelta(hours=12)


def test_the_default_strategies_rank_long_term_over_dividend_over_trading_over_aggressive() -> None:
    assert [s.name for s in sorted(DEFAULT_STRATEGIES, key=lambda s: -s.priority)] == [
        "long_term", "dividend", "trading", "aggressive"]
    locks = {s.name: s.config["ownership_lock_days"] for s in DEFAULT_STRATEGIES}
    assert locks == {"long_term": 90, "dividend": 365, "trading": 0, "aggressive": 0}
