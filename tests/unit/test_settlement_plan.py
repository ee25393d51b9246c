"""core/settlement.plan_settlement: what one brokerage report means for an order."""

from __future__ import annotations

from decimal import Decimal

from core.brokerage import BrokerOrder, Side
from core.positions import FillIncrement
from core.settlement import BookFill, Move, Review, plan_settlement
from core.states import OrderState

S = OrderState
ZERO = Decimal(0)


def report(status: str, filled: str = "0", avg: str | None = None, **extra: str) -> BrokerOrder:
    return BrokerOrder("b-1", "arb-1", "AAPL", Side.BUY, Decimal(10), status, Decimal(filled),
                       Decimal(avg) if avg else None, **extra)  # type: ignore[arg-type]


def test_a_pending_order_reported_filled_is_sent_booked_then_filled_in_that_order() -> None:
    plan = plan_settlement(S.ORDER_PENDING, ZERO, None, report("filled", "10", "5"))
    assert plan.steps == (
        Move(S.ORDER_SENT, "accepted by the brokerage"),
        BookFill(FillIncrement(Decimal(10), Decimal(5)), Decimal(10), Decimal(5)),
        Move(S.FULLY_FILLED, "brokerage: filled"),
    )
    assert plan.review is None


def test_an_accepted_order_without_fills_only_moves_to_order_sent() -> None:
    plan = plan_settlement(S.ORDER_PENDING, ZERO, None, report("new"))
    assert plan.steps == (Move(S.ORDER_SENT, "accepted by the brokerage"),)


def test_only_the_increment_over_the_recorded_fill_is_booked() -> None:
    plan = plan_settlement(S.PARTIAL_FILLED, Decimal(4), Decimal(10), report("filled", "10", "11"))
    assert plan.fill == BookFill(FillIncrement(Decimal(6), Decimal("11.666666667")),
                                 Decimal(10), Decimal(11))
    assert [m.target for m in plan.moves] == [S.FULLY_FILLED]


def test_a_repeated_partial_report_changes_nothing() -> None:
    plan = plan_settlement(S.PARTIAL_FILLED, Decimal(4), Decimal(10), report(
        "partially_filled", "4", "10"))
    assert plan.steps == ()


def test_a_newer_partial_fill_moves_partial_to_partial() -> None:
    plan = plan_settlement(S.PARTIAL_FILLED, Decimal(4), Decimal(10), report(
        "partially_filled", "6", "10"))
    assert [m.target for m in plan.moves] == [S.PARTIAL_FILLED]
    assert plan.fill is not None and plan.fill.increment.quantity == 2


def test_an_older_report_arriving_late_is_ignored() -> None:
    plan = plan_settlement(S.FULLY_FILLED, Decimal(10), Decimal(5), report(
        "partially_filled", "4", "5"))
    assert plan.steps == ()


def test_a_brokerage_rejection_carries_its_reason() -> None:
    plan = plan_settlement(S.ORDER_SENT, ZERO, None, report("rejected",
                                                            reject_reason="no buying power"))
    assert plan.moves == [Move(S.REJECTED, "no buying power")]


def test_a_fill_after_arbiter_cancelled_is_booked_and_flagged_for_review() -> None:
    plan = plan_settlement(S.CANCELLED, ZERO, None, report("filled", "10", "5"))
    assert plan.fill is not None and plan.fill.increment.quantity == 10
    assert plan.moves == []
    assert plan.review == ("brokerage reports filled (filled 10) for an order Arbiter holds "
                           "as CANCELLED")


def test_a_different_final_word_on_a_final_order_is_flagged() -> None:
    plan = plan_settlement(S.REJECTED, ZERO, None, report("expired"))
    assert plan.steps == ()  # expired is a cancel: the same final outcome, nothing to say
    plan = plan_settlement(S.CANCELLED, ZERO, None, report("rejected"))
    assert isinstance(plan.steps[-1], Review)


def test_a_status_that_cannot_follow_the_current_state_is_flagged() -> None:
    plan = plan_settlement(S.VALIDATING, ZERO, None, report("partially_filled", "4", "5"))
    assert plan.review == "brokerage status partially_filled cannot follow VALIDATING"


def test_a_sent_order_reported_new_again_changes_nothing() -> None:
    assert plan_settlement(S.ORDER_SENT, ZERO, None, report("new")).steps == ()


def test_a_sent_order_partly_filled_moves_to_partial_with_its_fill() -> None:
    plan = plan_settlement(S.ORDER_SENT, ZERO, None, report("partially_filled", "3", "7"))
    assert plan.steps == (
        BookFill(FillIncrement(Decimal(3), Decimal(7)), Decimal(3), Decimal(7)),
        Move(S.PARTIAL_FILLED, "brokerage: partially_filled"),
    )


def test_the_rest_cancelled_after_a_partial_fill_ends_cancelled() -> None:
    plan = plan_settlement(S.PARTIAL_FILLED, Decimal(3), Decimal(7), report("canceled", "3", "7"))
    assert plan.steps == (Move(S.CANCELLED, "brokerage: canceled"),)


def test_a_pending_order_the_brokerage_rejected_is_rejected_without_acceptance() -> None:
    plan = plan_settlement(S.ORDER_PENDING, ZERO, None, report("rejected"))
    assert plan.moves == [Move(S.REJECTED, "brokerage: rejected")]


def test_a_pending_order_the_brokerage_cancelled_is_cancelled_directly() -> None:
    plan = plan_settlement(S.ORDER_PENDING, ZERO, None, report("expired"))
    assert plan.moves == [Move(S.CANCELLED, "brokerage: expired")]


def test_a_repeated_final_report_on_a_filled_order_changes_nothing() -> None:
    assert plan_settlement(S.FULLY_FILLED, Decimal(10), Decimal(5),
                           report("filled", "10", "5")).steps == ()


def test_a_fill_reported_on_a_rejected_order_is_booked_and_flagged() -> None:
    plan = plan_settlement(S.REJECTED, ZERO, None, report("partially_filled", "2", "9"))
    assert plan.fill is not None and plan.review is not None and plan.moves == []
