"""The simulator's pure price rules: stops, trailing stops and limits on the seeded price path."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from brokersim.prices import PriceBook
from brokersim.records import StoredOrder
from brokersim.triggers import limit_crossed, stop_elected, trail

D = Decimal


def order(**changes: object) -> StoredOrder:
    base = StoredOrder(
        id="o",
        client_order_id="c",
        symbol="AAPL",
        side="sell",
        type="trailing_stop",
        time_in_force="gtc",
        qty=D(1),
        limit_price=None,
        extended_hours=False,
        status="new",
        filled_qty=D(0),
        filled_avg_price=None,
        submitted_at="t",
        updated_at="t",
        trail_price=D(2),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "side, trail_price, trail_percent, hwm, price, expected",
    [
        ("sell", "2", None, None, "100", ("100", "98")),
        ("sell", "2", None, "105", "104", ("105", "103")),  # below the mark: stop unchanged
        ("sell", "2", None, "105", "107", ("107", "105")),
        ("sell", None, "10", "100", "90", ("100", "90")),
        ("buy", "2", None, "100", "90", ("90", "92")),  # a buy trails the low-water mark
        ("buy", None, "5", "100", "101", ("100", "105")),
        ("sell", "5", None, None, "3", ("3", "0.01")),  # never below a cent
    ],
)
def test_trailing_stop_follows_the_mark(
    side: str,
    trail_price: str | None,
    trail_percent: str | None,
    hwm: str | None,
    price: str,
    expected: tuple[str, str],
) -> None:
    o = order(
        side=side,
        trail_price=None if trail_price is None else D(trail_price),
        trail_percent=None if trail_percent is None else D(trail_percent),
        hwm=None if hwm is None else D(hwm),
    )
    assert trail(o, D(price)) == (D(expected[0]), D(expected[1]))


@pytest.mark.parametrize(
    "side, stop, price, elected",
    [
        ("sell", "95", "95", True),
        ("sell", "95", "95.01", False),
        ("buy", "105", "105", True),
        ("buy", "105", "104.99", False),
    ],
)
def test_stops_are_elected_at_or_through_their_price(
    side: str, stop: str, price: str, elected: bool
) -> None:
    o = order(side=side, type="stop", stop_price=D(stop), trail_price=None)
    assert stop_elected(o, D(price)) is elected
    assert stop_elected(replace(o, triggered=True), D(price)) is True


@pytest.mark.parametrize(
    "side, limit, price, crossed",
    [
        ("buy", "10", "10", True),
        ("buy", "10", "10.01", False),
        ("sell", "10", "9.99", False),
        ("sell", "10", "10", True),
    ],
)
def test_limits_cross_on_the_right_side(side: str, limit: str, price: str, crossed: bool) -> None:
    o = order(side=side, type="stop_limit", limit_price=D(limit))
    assert limit_crossed(o, D(price)) is crossed
    assert limit_crossed(replace(o, type="market", limit_price=None), D(price)) is True


def _first_trigger(seed: int, ticks: int) -> int | None:
    """The tick at which a 0.2 % trailing sell stop fires on the seeded walk, if it does."""
    book = PriceBook(seed)
    o = order(trail_price=None, trail_percent=D("0.2"))
    for tick in range(ticks):
        hwm, stop = trail(o, book.price("AAPL"))
        o = replace(o, hwm=hwm, stop_price=stop)
        if stop_elected(replace(o, type="stop"), book.price("AAPL")):
            return tick
        book.advance()
    return None


def test_stops_fire_at_the_same_tick_for_the_same_seed() -> None:
    first = _first_trigger(7, 5000)
    assert first is not None and first == _first_trigger(7, 5000)
    assert [_first_trigger(s, 5000) for s in (1, 2, 3)] == [
        _first_trigger(s, 5000) for s in (1, 2, 3)
    ]
