"""core/signals.Signal.parse: each field, its good values, and each bad value named clearly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.brokerage import OrderType, Side, TimeInForce
from core.errors import InvalidSignal
from core.signals import Signal, client_order_id_for

GOOD: dict[str, Any] = {
    "strategy": "long_term", "signal_id": "sig-1", "ticker": "AAPL", "side": "buy",
    "quantity": "10",
}


def parse(**changes: Any) -> Signal:
    return Signal.parse({**GOOD, **changes})


def refused(**changes: Any) -> InvalidSignal:
    with pytest.raises(InvalidSignal) as caught:
        parse(**changes)
    return caught.value


def test_a_minimal_signal_is_a_market_day_order() -> None:
    signal = parse()
    assert (signal.order_type, signal.time_in_force, signal.limit_price) == (
        OrderType.MARKET, TimeInForce.DAY, None)
    assert signal.quantity == Decimal(10) and signal.side is Side.BUY


def test_a_signal_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidSignal, match="signal: must be an object, got list"):
        Signal.parse([GOOD])


def test_a_missing_field_is_named() -> None:
    data = dict(GOOD)
    del data["ticker"]
    with pytest.raises(InvalidSignal) as caught:
        Signal.parse(data)
    assert caught.value.field == "ticker"


def test_an_unknown_field_is_refused() -> None:
    assert refused(colour="red").field == "colour"


@pytest.mark.parametrize("value", ["LongTerm", "long term", "", "9lives", 7, None, "x" * 65])
def test_a_strategy_name_must_be_lowercase_identifier(value: Any) -> None:
    error = refused(strategy=value)
    assert error.field == "strategy" and "strategy name like 'long_term'" in error.message


@pytest.mark.parametrize("value", ["", "has space", "a/b", "x" * 101, 12, None])
def test_a_signal_id_must_be_short_and_plain(value: Any) -> None:
    error = refused(signal_id=value)
    assert error.field == "signal_id" and "1-100 characters" in error.message


def test_a_signal_id_may_use_dots_colons_and_dashes() -> None:
    assert parse(signal_id="2026-11-29:run.1_a").signal_id == "2026-11-29:run.1_a"


def test_a_ticker_is_trimmed_and_upper_cased() -> None:
    assert parse(ticker=" nvda ").ticker == "NVDA"


@pytest.mark.parametrize("value", ["BRK.B", "BF-B", "A", "GOOGL"])
def test_class_shares_and_short_tickers_are_accepted(value: str) -> None:
    assert parse(ticker=value).ticker == value


@pytest.mark.parametrize("value", ["", "TOOLONGX", "AA PL", "$AAPL", "1ABC", "AAPL.XYZ"])
def test_an_odd_ticker_is_refused(value: str) -> None:
    error = refused(ticker=value)
    assert error.field == "ticker" and "is not a ticker" in error.message


def test_a_ticker_that_is_not_a_string_is_refused() -> None:
    assert refused(ticker=42).message == "must be a string, got int"


def test_side_is_case_insensitive() -> None:
    assert parse(side=" SELL ").side is Side.SELL


@pytest.mark.parametrize("value", ["hold", "", None, 1])
def test_an_unknown_side_is_refused(value: Any) -> None:
    assert refused(side=value).field == "side"


@pytest.mark.parametrize("value", ["0.5", 3, 2.25, Decimal("0.000000001")])
def test_fractional_and_numeric_quantities_are_accepted(value: Any) -> None:
    assert parse(quantity=value).quantity == Decimal(str(value))


@pytest.mark.parametrize("value", ["0", -1, "-0.5"])
def test_a_quantity_must_be_positive(value: Any) -> None:
    assert refused(quantity=value).message == "must be greater than 0"


@pytest.mark.parametrize("value", ["NaN", float("nan"), float("inf"), "Infinity"])
def test_a_quantity_must_be_finite(value: Any) -> None:
    assert refused(quantity=value).message == "must be finite"


def test_an_absurd_quantity_is_refused() -> None:
    assert "absurdly large" in refused(quantity="1e9").message


def test_a_quantity_with_more_than_nine_decimals_is_refused() -> None:
    assert refused(quantity="0.0000000001").message == "has more than 9 decimal places"


@pytest.mark.parametrize("value", [True, None, [1], {"q": 1}])
def test_a_quantity_of_the_wrong_type_is_refused(value: Any) -> None:
    assert refused(quantity=value).message.startswith("must be a number")


def test_a_quantity_that_is_not_a_number_is_named() -> None:
    assert refused(quantity="ten").message == "not a number: 'ten'"


def test_a_limit_order_carries_its_price() -> None:
    signal = parse(order_type="LIMIT", limit_price="101.25")
    assert (signal.order_type, signal.limit_price) == (OrderType.LIMIT, Decimal("101.25"))


def test_a_limit_order_without_a_price_is_refused() -> None:
    error = refused(order_type="limit")
    assert (error.field, error.message) == ("limit_price", "required for a limit order")


def test_a_market_order_with_a_price_is_refused() -> None:
    error = refused(limit_price="10")
    assert (error.field, error.message) == ("limit_price", "a market order takes no limit price")


@pytest.mark.parametrize("value", ["0", "-1", "1e7", "NaN"])
def test_an_impossible_limit_price_is_refused(value: str) -> None:
    assert refused(order_type="limit", limit_price=value).field == "limit_price"


def test_an_unknown_order_type_is_refused() -> None:
    assert refused(order_type="teleport").field == "order_type"


def test_time_in_force_is_parsed() -> None:
    assert parse(time_in_force="GTC").time_in_force is TimeInForce.GTC


def test_an_unknown_time_in_force_is_refused() -> None:
    assert refused(time_in_force="forever").field == "time_in_force"


def test_the_client_order_id_is_derived_from_strategy_and_signal_id() -> None:
    assert parse().client_order_id == client_order_id_for("long_term", "sig-1")
    assert parse().client_order_id == parse(quantity="99").client_order_id
    assert parse().client_order_id != parse(signal_id="sig-2").client_order_id
    assert parse().client_order_id.startswith("arb-")


def test_the_queue_message_round_trips() -> None:
    signal = parse(order_type="limit", limit_price="5.5")
    message = signal.to_message()
    assert message["quantity"] == "10" and message["limit_price"] == "5.5"
    assert Signal.parse(message) == signal
