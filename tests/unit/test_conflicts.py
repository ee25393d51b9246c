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


# -- each case of decide() by name ---------------------------------------------------------------

AGGRESSIVE = StrategyView("aggressive", 30)


def test_an_unknown_strategy_is_blocked_with_its_name() -> None:
    decision = decide(None, "ghost", "AAPL", Side.BUY, None, NOW)
    assert decision.resolution is Resolution.BLOCKED
    assert decision.reasoning == "strategy 'ghost' is unknown"
    assert not decision.conflict and not decision.claim


def test_an_inactive_strategy_is_blocked_even_on_a_free_ticker() -> None:
    sleeping = StrategyView("trading", 50, active=False)
    decision = decide(sleeping, "trading", "AAPL", Side.BUY, None, NOW)
    assert (decision.resolution, decision.reasoning) == (
        Resolution.BLOCKED, "strategy 'trading' is inactive")


def test_a_buy_on_a_free_ticker_claims_it() -> None:
    decision = decide(TRADING, "trading", "AMD", Side.BUY, None, NOW)
    assert decision.resolution is Resolution.ALLOWED and decision.claim
    assert not decision.conflict
    assert decision.reasoning == "AMD has no owner: trading may buy AMD and claims AMD"


def test_a_sell_on_a_free_ticker_is_allowed_without_a_claim() -> None:
    decision = decide(TRADING, "trading", "AMD", Side.SELL, None, NOW)
    assert decision.resolution is Resolution.ALLOWED and not decision.claim


def test_the_owner_may_buy_more_while_locked() -> None:
    owned = Ownership("AAPL", LONG_TERM, NOW + timedelta(days=90))
    decision = decide(LONG_TERM, "long_term", "AAPL", Side.BUY, owned, NOW)
    assert decision.allowed and not decision.claim and not decision.conflict


def test_equal_priority_is_blocked_as_insufficient() -> None:
    peer = StrategyView("other_trading", 50)
    decision = decide(peer, "other_trading", "TSLA", Side.BUY, Ownership("TSLA", TRADING), NOW)
    assert decision.resolution is Resolution.BLOCKED and decision.conflict
    assert "insufficient priority" in decision.reasoning
    assert decision.previous_owner == TRADING


def test_a_lower_priority_buy_is_blocked_even_when_unlocked() -> None:
    decision = decide(AGGRESSIVE, "aggressive", "TSLA", Side.BUY, Ownership("TSLA", TRADING), NOW)
    assert decision.resolution is Resolution.BLOCKED
    assert "aggressive (priority 30) vs owner trading (priority 50)" in decision.reasoning


def test_a_lock_blocks_with_its_expiry_in_the_reasoning() -> None:
    owned = Ownership("KO", TRADING, datetime(2027, 1, 2, 3, 4, tzinfo=UTC))
    decision = decide(LONG_TERM, "long_term", "KO", Side.BUY, owned, NOW)
    assert decision.resolution is Resolution.BLOCKED
    assert "locked until 2027-01-02 03:04 UTC" in decision.reasoning


def test_a_lock_ending_exactly_now_no_longer_holds() -> None:
    owned = Ownership("KO", TRADING, NOW)
    assert not owned.locked_at(NOW)
    decision = decide(LONG_TERM, "long_term", "KO", Side.BUY, owned, NOW)
    assert decision.resolution is Resolution.PRIORITY_OVERRIDE


def test_an_owner_with_orders_in_flight_is_not_overridden() -> None:
    owned = Ownership("TSLA", TRADING, None, owner_orders_in_flight=2)
    decision = decide(LONG_TERM, "long_term", "TSLA", Side.BUY, owned, NOW)
    assert decision.resolution is Resolution.BLOCKED and decision.conflict
    assert "2 order(s) in flight" in decision.reasoning


def test_an_override_names_both_sides_and_where_ownership_goes() -> None:
    decision = decide(LONG_TERM, "long_term", "TSLA", Side.BUY, Ownership("TSLA", TRADING), NOW)
    assert decision.reasoning.startswith("PRIORITY_OVERRIDE long_term buy TSLA")
    assert decision.reasoning.endswith("ownership of TSLA moves to long_term")


def test_a_higher_priority_sell_also_overrides_an_unlocked_owner() -> None:
    decision = decide(LONG_TERM, "long_term", "TSLA", Side.SELL, Ownership("TSLA", TRADING), NOW)
    assert decision.resolution is Resolution.PRIORITY_OVERRIDE and decision.claim
