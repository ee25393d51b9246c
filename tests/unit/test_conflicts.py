"""Conflict rules: the four cases of core/conflicts.py, and properties over random decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from core.brokerage import Side
from core.conflicts import Ownership, Resolution, StrategyView, decide

NOW = datetime(2026, 11, 22, tzinfo=UTC)
LONG_TERM = StrategyView("long_term", 100)
TRADING = StrategyView("trading", 50)


def test_a_lower_priority_sell_is_blocked_while_locked() -> None:
    owned = Ownership("NVDA", LONG_TERM, NOW + timedelta(days=90))
    decision = decide(TRADING, "trading", "NVDA", Side.SELL, owned, NOW)
    assert decision.resolution is Resolution.BLOCKED and decision.conflict
    assert "insufficient priority" in decision.reasoning


def test_a_higher_priority_buy_overrides_an_unlocked_owner() -> None:
    owned = Ownership("TSLA", TRADING, None)
    decision = decide(LONG_TERM, "long_term", "TSLA", Side.BUY, owned, NOW)
    assert decision.resolution is Resolution.PRIORITY_OVERRIDE
    assert decision.claim and decision.conflict and decision.previous_owner == TRADING


def test_the_owner_adjusting_its_own_position_is_allowed() -> None:
    owned = Ownership("AAPL", LONG_TERM, NOW + timedelta(days=90))
    decision = decide(LONG_TERM, "long_term", "AAPL", Side.SELL, owned, NOW)
    assert decision.resolution is Resolution.ALLOWED and not decision.conflict
    assert "own position" in decision.reasoning


def test_a_higher_priority_is_blocked_by_a_live_lock() -> None:
    dividend = StrategyView("dividend", 90)
    owned = Ownership("KO", dividend, NOW + timedelta(days=1))
    assert decide(LONG_TERM, "long_term", "KO", Side.BUY, owned, NOW).resolution is (
        Resolution.BLOCKED
    )
    expired = Ownership("KO", dividend, NOW - timedelta(seconds=1))
    assert decide(LONG_TERM, "long_term", "KO", Side.BUY, expired, NOW).resolution is (
        Resolution.PRIORITY_OVERRIDE
    )


def test_unknown_and_inactive_strategies_are_blocked() -> None:
    assert not decide(None, "ghost", "A", Side.BUY, None, NOW).allowed
    inactive = StrategyView("trading", 50, active=False)
    assert not decide(inactive, "trading", "A", Side.BUY, None, NOW).allowed


views = st.builds(
    StrategyView,
    name=st.sampled_from(["long_term", "dividend", "trading", "aggressive", "custom"]),
    priority=st.integers(0, 200),
    active=st.booleans(),
)


@given(
    requests=st.lists(
        st.tuples(views, st.sampled_from(list(Side)), st.integers(-10, 10), st.integers(0, 2)),
        max_size=40,
    )
)
def test_no_sequence_of_decisions_yields_two_owners_and_every_decision_has_reasoning(
    requests: list[tuple[StrategyView, Side, int, int]],
) -> None:
    owner: Ownership | None = None
    for requester, side, lock_days, in_flight in requests:
        decision = decide(requester, requester.name, "XYZ", side, owner, NOW)
        assert decision.reasoning.strip()
        if owner is not None and owner.owner.name != requester.name:
            assert decision.conflict == requester.active
            if decision.resolution is Resolution.PRIORITY_OVERRIDE:
                # a higher priority wins only when unlocked and nothing is in flight
                assert requester.priority > owner.owner.priority
                assert not owner.locked_at(NOW) and not owner.owner_orders_in_flight
            elif requester.active and requester.priority > owner.owner.priority:
                assert owner.locked_at(NOW) or owner.owner_orders_in_flight
        if decision.claim:
            # claiming replaces the single owner: there is never a second one
            owner = Ownership("XYZ", requester, NOW + timedelta(days=lock_days), in_flight)
