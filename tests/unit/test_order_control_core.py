"""Order types and classes in Signal.parse, reference prices, the notional rule without a price,
and the inactive owner in the conflict rules: core only, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.brokerage import OrderClass, OrderType, Side, TimeInForce
from core.conflicts import Ownership, Resolution, StrategyView, decide
from core.errors import InvalidSignal
from core.market_data import LatestQuote, ReferencePrices, reference_from
from core.risk import OrderFacts, RiskContext, RiskLimits, evaluate, first_failure
from core.signals import Signal

BASE = {"strategy": "trading", "signal_id": "s-1", "ticker": "AAPL", "side": "buy", "quantity": 5}


def parse(**changes: Any) -> Signal:
    return Signal.parse({**BASE, **changes})


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"order_type": "stop", "stop_price": "90"}, OrderType.STOP),
        (
            {"order_type": "stop_limit", "stop_price": "90", "limit_price": "89"},
            OrderType.STOP_LIMIT,
        ),
        ({"order_type": "trailing_stop", "trail_percent": "2.5"}, OrderType.TRAILING_STOP),
        ({"order_type": "trailing_stop", "trail_price": "1.5"}, OrderType.TRAILING_STOP),
    ],
)
def test_every_alpaca_order_type_parses_with_its_prices(
    changes: dict[str, Any], kind: OrderType
) -> None:
    assert parse(**changes).order_type is kind


@pytest.mark.parametrize("tif", ["day", "gtc", "ioc", "fok", "opg", "cls"])
def test_every_alpaca_time_in_force_parses(tif: str) -> None:
    assert parse(time_in_force=tif).time_in_force is TimeInForce(tif)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"order_type": "stop"}, "stop_price"),
        ({"order_type": "stop_limit", "stop_price": "9"}, "limit_price"),
        ({"order_type": "market", "stop_price": "9"}, "stop_price"),
        ({"order_type": "limit", "limit_price": "9", "trail_percent": "1"}, "trail_price"),
        ({"order_type": "trailing_stop"}, "trail_price"),
        ({"order_type": "trailing_stop", "trail_price": "1", "trail_percent": "1"}, "trail_price"),
        ({"order_type": "trailing_stop", "trail_percent": "100"}, "trail_percent"),
        ({"order_type": "stop", "stop_price": "-1"}, "stop_price"),
        ({"order_class": "bracket", "take_profit": {"limit_price": "110"}}, "stop_loss"),
        ({"stop_loss": {"stop_price": "90"}, "time_in_force": "ioc"}, "time_in_force"),
        (
            {
                "order_class": "oco",
                "take_profit": {"limit_price": 1},
                "stop_loss": {"stop_price": 2},
            },
            "order_type",
        ),
        ({"take_profit": {"limit_price": "110"}, "stop_loss": {}}, "stop_loss.stop_price"),
        ({"order_class": "triangle"}, "order_class"),
    ],
)
def test_prices_that_do_not_fit_the_type_name_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidSignal) as caught:
        parse(**changes)
    assert caught.value.field == field


def test_legs_without_a_class_make_a_bracket_or_an_oto() -> None:
    bracket = parse(take_profit={"limit_price": "110"}, stop_loss={"stop_price": "90"})
    assert bracket.order_class is OrderClass.BRACKET
    oto = parse(stop_loss={"stop_price": "90", "limit_price": "89"})
    assert oto.order_class is OrderClass.OTO
    assert oto.stop_loss is not None and oto.stop_loss.limit_price == Decimal(89)


def test_a_plain_signals_queue_message_is_unchanged_and_legs_travel() -> None:
    assert set(parse().to_message()) == {
        "strategy", "signal_id", "ticker", "side", "quantity", "order_type", "limit_price",
        "time_in_force",
    }  # fmt: skip
    message = parse(order_type="stop", stop_price="90", stop_loss=None).to_message()
    assert message["stop_price"] == "90"
    assert Signal.parse(message) == parse(order_type="stop", stop_price="90")


def test_reference_price_is_the_last_trade_else_the_quote_mid() -> None:
    quote = LatestQuote(Decimal("9.99"), Decimal("10.01"))
    assert reference_from(Decimal("10.5"), quote) == Decimal("10.5")
    assert reference_from(None, quote) == Decimal("10.00")
    assert reference_from(None, LatestQuote(None, Decimal(10))) is None
    assert reference_from(None, LatestQuote(Decimal(11), Decimal(10))) is None  # crossed
    assert reference_from(None, None) is None


class CountingSource:
    def __init__(self, trade: Decimal | None) -> None:
        self.trade = trade
        self.asked = 0

    def latest_trade_price(self, symbol: str) -> Decimal | None:
        self.asked += 1
        return self.trade

    def latest_quote(self, symbol: str) -> LatestQuote | None:
        return None


def test_reference_prices_are_cached_for_a_few_seconds_per_ticker() -> None:
    now = [0.0]
    source = CountingSource(Decimal(100))
    prices = ReferencePrices(source, ttl_s=5, clock=lambda: now[0])
    assert prices.price("AAPL") == Decimal(100)
    assert prices.price("AAPL") == Decimal(100)
    assert source.asked == 1
    prices.price("MSFT")
    assert source.asked == 2
    now[0] = 6.0
    prices.price("AAPL")
    assert source.asked == 3


LIMITS = RiskLimits(Decimal(10_000), Decimal(250_000), 500, 600)


def _verdict(facts: OrderFacts, price: Decimal | None) -> str | None:
    failed = first_failure(evaluate(facts, LIMITS, RiskContext(True, False, 0, 0, price)))
    return None if failed is None else f"{failed.rule}: {failed.reason}"


def test_no_reference_price_rejects_rather_than_passes() -> None:
    facts = OrderFacts("AAPL", Decimal(10_000), None)
    assert _verdict(facts, None) == "max_order_notional: no reference price for AAPL"
    assert _verdict(facts, Decimal(100)) is not None  # 1,000,000 > 250,000
    assert _verdict(OrderFacts("AAPL", Decimal(10), None), Decimal(100)) is None


def test_an_inactive_owner_ranks_below_every_active_strategy_even_when_locked() -> None:
    now = datetime.now(UTC)
    owner = Ownership("AAPL", StrategyView("long_term", 100, active=False), now + timedelta(days=9))
    decision = decide(StrategyView("aggressive", 30), "aggressive", "AAPL", Side.BUY, owner, now)
    assert decision.resolution is Resolution.PRIORITY_OVERRIDE
    assert "inactive and ranks below every active strategy" in decision.reasoning
    busy = Ownership("AAPL", owner.owner, None, owner_orders_in_flight=1)
    blocked = decide(StrategyView("aggressive", 30), "aggressive", "AAPL", Side.BUY, busy, now)
    assert blocked.resolution is Resolution.BLOCKED
