"""core/positions.py: average cost on buys, realised P&L on sells, to flat, partial fills,
merging two holdings, and the fill increment implied by cumulative reports."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.brokerage import Side
from core.positions import FillIncrement, PositionState, apply_fill, fill_increment, merge

D = Decimal
FLAT = PositionState()


def test_a_first_buy_opens_at_the_fill_price() -> None:
    assert apply_fill(FLAT, Side.BUY, D(10), D(100)) == PositionState(D(10), D(100), D(0))


def test_a_second_buy_averages_the_cost() -> None:
    held = PositionState(D(10), D(100))
    assert apply_fill(held, Side.BUY, D(30), D(120)) == PositionState(D(40), D(115), D(0))


def test_the_average_cost_is_rounded_to_nine_places() -> None:
    held = PositionState(D(1), D(1))
    after = apply_fill(held, Side.BUY, D(2), D(1))
    assert after.avg_cost == D(1)
    after = apply_fill(PositionState(D(1), D(0)), Side.BUY, D(2), D(1))
    assert after.avg_cost == D("0.666666667")


def test_a_buy_keeps_the_realised_pnl() -> None:
    held = PositionState(D(5), D(10), D("7.5"))
    assert apply_fill(held, Side.BUY, D(5), D(20)).realized_pnl == D("7.5")


def test_a_partial_sell_realises_pnl_against_the_average_cost() -> None:
    held = PositionState(D(40), D(115))
    after = apply_fill(held, Side.SELL, D(10), D(130))
    assert after == PositionState(D(30), D(115), D(150))


def test_a_sell_below_cost_realises_a_loss() -> None:
    after = apply_fill(PositionState(D(10), D(50)), Side.SELL, D(4), D(45))
    assert after.realized_pnl == D(-20) and after.avg_cost == D(50)


def test_selling_everything_goes_flat_and_clears_the_cost() -> None:
    after = apply_fill(PositionState(D(10), D(50), D(3)), Side.SELL, D(10), D(60))
    assert after == PositionState(D(0), D(0), D(103))


def test_fractional_shares_keep_exact_decimals() -> None:
    after = apply_fill(FLAT, Side.BUY, D("0.5"), D("200.10"))
    after = apply_fill(after, Side.SELL, D("0.25"), D("210.10"))
    assert after == PositionState(D("0.25"), D("200.10"), D("2.5000"))


def test_buy_then_sell_in_slices_equals_one_round_trip() -> None:
    sliced = FLAT
    for quantity in (D(3), D(3), D(4)):
        sliced = apply_fill(sliced, Side.BUY, quantity, D(10))
    for quantity in (D(5), D(5)):
        sliced = apply_fill(sliced, Side.SELL, quantity, D(12))
    whole = apply_fill(apply_fill(FLAT, Side.BUY, D(10), D(10)), Side.SELL, D(10), D(12))
    assert sliced == whole == PositionState(D(0), D(0), D(20))


def test_merging_two_holdings_weights_their_costs() -> None:
    merged = merge(PositionState(D(10), D(100), D(5)), PositionState(D(30), D(120), D(99)))
    assert merged == PositionState(D(40), D(115), D(5))  # only the receiver's P&L stays


def test_merging_into_a_flat_position_takes_the_other() -> None:
    assert merge(FLAT, PositionState(D(3), D(7))) == PositionState(D(3), D(7), D(0))


def test_merging_two_flat_positions_stays_flat() -> None:
    assert merge(FLAT, FLAT) == FLAT


def test_a_first_cumulative_report_is_the_whole_fill() -> None:
    assert fill_increment(D(0), None, D(4), D(10)) == FillIncrement(D(4), D(10))


def test_a_later_report_books_only_the_new_slice_at_its_implied_price() -> None:
    # 4 @ 10 recorded; the brokerage now reports 10 @ 11 on average: 6 more @ 11.666...
    assert fill_increment(D(4), D(10), D(10), D(11)) == FillIncrement(D(6), D("11.666666667"))


@pytest.mark.parametrize("reported", [D(0), D(3), D(4)])
def test_a_report_that_adds_nothing_books_nothing(reported: Decimal) -> None:
    assert fill_increment(D(4), D(10), reported, D(10)) is None


def test_a_report_with_fills_but_no_price_is_an_error() -> None:
    with pytest.raises(ValueError, match="average price"):
        fill_increment(D(0), None, D(1), None)


def test_a_rounding_artifact_falls_back_to_the_reported_average() -> None:
    # An average inconsistent with the recorded one would imply a non-positive slice price;
    # the report's average is used instead.
    assert fill_increment(D(3), D("10.1"), D(4), D("7.5")) == FillIncrement(D(1), D("7.5"))
