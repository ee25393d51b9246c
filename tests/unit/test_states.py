"""The transition table, pair by pair, and random walks that must stay inside it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from core.errors import InvalidTransition
from core.events import EventType, transition_event_type
from core.states import (
    BROKERAGE_CAUSES,
    TERMINAL_STATES,
    TRANSITIONS,
    OrderState,
    TransitionCause,
    can_transition,
    check_transition,
    is_valid_path,
)

S = OrderState

ALLOWED = {
    (S.IDLE, S.SIGNAL_RECEIVED),
    (S.SIGNAL_RECEIVED, S.VALIDATING),
    (S.SIGNAL_RECEIVED, S.REJECTED),
    (S.SIGNAL_RECEIVED, S.CANCELLED),
    (S.VALIDATING, S.ORDER_PENDING),
    (S.VALIDATING, S.REJECTED),
    (S.VALIDATING, S.CANCELLED),  # a cancel before submission (SPEC §9)
    (S.ORDER_PENDING, S.ORDER_SENT),
    (S.ORDER_PENDING, S.REJECTED),
    (S.ORDER_PENDING, S.FAILED),
    (S.ORDER_PENDING, S.CANCELLED),
    (S.ORDER_SENT, S.PARTIAL_FILLED),
    (S.ORDER_SENT, S.FULLY_FILLED),
    (S.ORDER_SENT, S.CANCELLED),
    (S.ORDER_SENT, S.REJECTED),
    (S.ORDER_SENT, S.FAILED),
    (S.PARTIAL_FILLED, S.PARTIAL_FILLED),
    (S.PARTIAL_FILLED, S.FULLY_FILLED),
    (S.PARTIAL_FILLED, S.CANCELLED),
}

ALL_PAIRS = list(itertools.product(OrderState, repeat=2))


def test_there_are_exactly_ten_states_and_a_hundred_pairs() -> None:
    assert len(OrderState) == 10
    assert len(ALL_PAIRS) == 100


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=lambda s: s.value)
def test_each_pair_is_allowed_exactly_when_spec_lists_it(
    source: OrderState, target: OrderState
) -> None:
    if (source, target) in ALLOWED:
        check_transition(source, target)
        assert can_transition(source, target)
    else:
        with pytest.raises(InvalidTransition, match=f"{source.value} -> {target.value}"):
            check_transition(source, target)


def test_terminal_states_are_the_four_with_no_way_out() -> None:
    assert {S.FULLY_FILLED, S.CANCELLED, S.REJECTED, S.FAILED} == TERMINAL_STATES
    assert all(not TRANSITIONS[state] for state in TERMINAL_STATES)


def test_rejection_before_the_brokerage_is_a_signal_rejection() -> None:
    assert transition_event_type(S.VALIDATING, S.REJECTED) is EventType.SIGNAL_REJECTED
    assert transition_event_type(S.ORDER_SENT, S.REJECTED) is EventType.ORDER_REJECTED
    assert transition_event_type(S.ORDER_SENT, S.FULLY_FILLED) is EventType.ORDER_FILLED
    assert transition_event_type(S.SIGNAL_RECEIVED, S.VALIDATING) is EventType.SIGNAL_VALIDATED


class RandomOrderLife(RuleBasedStateMachine):
    """Random attempted moves: the accepted ones never leave the table or a terminal state."""

    def __init__(self) -> None:
        super().__init__()
        self.state = S.IDLE
        self.path = [S.IDLE]

    @rule(move_to=st.sampled_from(list(OrderState)))
    def attempt(self, move_to: OrderState) -> None:
        was_terminal = self.state in TERMINAL_STATES
        try:
            check_transition(self.state, move_to)
        except InvalidTransition:
            return
        assert not was_terminal, f"left terminal state {self.state}"
        self.state = move_to
        self.path.append(move_to)

    @invariant()
    def path_stays_in_the_table(self) -> None:
        assert is_valid_path(self.path)


TestRandomOrderLife = RandomOrderLife.TestCase


# -- named sets, causes and the events a move announces ------------------------------------------


def test_the_terminal_states_are_the_four_final_outcomes() -> None:
    assert {S.FULLY_FILLED, S.CANCELLED, S.REJECTED, S.FAILED} == TERMINAL_STATES


def test_a_move_out_of_a_terminal_state_names_both_states() -> None:
    with pytest.raises(InvalidTransition, match="FULLY_FILLED -> ORDER_SENT"):
        check_transition(S.FULLY_FILLED, S.ORDER_SENT)


def test_partial_fills_may_repeat() -> None:
    assert can_transition(S.PARTIAL_FILLED, S.PARTIAL_FILLED)


def test_a_pending_order_never_jumps_to_filled() -> None:
    assert not can_transition(S.ORDER_PENDING, S.FULLY_FILLED)


def test_the_happy_path_is_a_valid_path() -> None:
    assert is_valid_path([S.IDLE, S.SIGNAL_RECEIVED, S.VALIDATING, S.ORDER_PENDING,
                          S.ORDER_SENT, S.PARTIAL_FILLED, S.FULLY_FILLED])
    assert not is_valid_path([S.IDLE, S.VALIDATING])


def test_only_the_brokerages_word_settles_a_cancel_for_good() -> None:
    assert {TransitionCause.BROKERAGE_REPORT} == BROKERAGE_CAUSES
    assert TransitionCause.KILL_SWITCH not in BROKERAGE_CAUSES
    assert TransitionCause.OPERATOR not in BROKERAGE_CAUSES


def test_a_rejection_before_the_brokerage_saw_it_is_a_signal_rejection() -> None:
    assert transition_event_type(S.VALIDATING, S.REJECTED) is EventType.SIGNAL_REJECTED
    assert transition_event_type(S.SIGNAL_RECEIVED, S.REJECTED) is EventType.SIGNAL_REJECTED


def test_a_rejection_after_submission_is_an_order_rejection() -> None:
    assert transition_event_type(S.ORDER_PENDING, S.REJECTED) is EventType.ORDER_REJECTED
    assert transition_event_type(S.ORDER_SENT, S.REJECTED) is EventType.ORDER_REJECTED


def test_the_internal_step_to_order_pending_announces_nothing() -> None:
    assert transition_event_type(S.VALIDATING, S.ORDER_PENDING) is None
