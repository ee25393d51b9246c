"""core/risk.py: each pre-trade rule on its own, with its reason, and strategy overrides."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from core.risk import OrderFacts, RiskContext, RiskLimits, RiskVerdict, evaluate, first_failure

LIMITS = RiskLimits(
    max_order_quantity=Decimal(10_000),
    max_order_notional=Decimal(250_000),
    max_open_orders=50,
    max_signals_per_minute=120,
)
ORDER = OrderFacts("AAPL", Decimal(10), None)
CALM = RiskContext(
    strategy_active=True,
    kill_switch_on=False,
    open_orders=0,
    signals_last_minute=0,
    reference_price=Decimal(100),
)


def verdict(rule: str, order: OrderFacts = ORDER, ctx: RiskContext = CALM,
            limits: RiskLimits = LIMITS) -> RiskVerdict:
    return next(v for v in evaluate(order, limits, ctx) if v.rule == rule)


def failure(order: OrderFacts = ORDER, ctx: RiskContext = CALM,
            limits: RiskLimits = LIMITS) -> RiskVerdict | None:
    return first_failure(evaluate(order, limits, ctx))


def test_an_ordinary_order_passes_every_rule() -> None:
    assert all(v.passed for v in evaluate(ORDER, LIMITS, CALM))
    assert failure() is None


def test_rules_are_evaluated_in_a_fixed_order() -> None:
    assert [v.rule for v in evaluate(ORDER, LIMITS, CALM)] == [
        "kill_switch", "strategy_active", "ticker_format", "quantity_positive",
        "max_order_quantity", "max_order_notional", "max_open_orders", "max_signals_per_minute",
    ]


def test_the_kill_switch_rejects_every_order() -> None:
    found = failure(ctx=replace(CALM, kill_switch_on=True))
    assert found is not None and found.rule == "kill_switch"
    assert found.reason == "kill switch is on: no new orders accepted"
    assert not found.limit_exceeded


def test_an_inactive_strategy_is_rejected() -> None:
    found = failure(ctx=replace(CALM, strategy_active=False))
    assert found is not None and (found.rule, found.reason) == (
        "strategy_active", "strategy is inactive")


def test_the_kill_switch_is_reported_before_an_inactive_strategy() -> None:
    found = failure(ctx=replace(CALM, kill_switch_on=True, strategy_active=False))
    assert found is not None and found.rule == "kill_switch"


def test_a_malformed_ticker_is_rejected() -> None:
    found = failure(order=replace(ORDER, ticker="aapl$"))
    assert found is not None and found.rule == "ticker_format"
    assert found.reason == "'aapl$' is not a valid ticker"


def test_a_class_share_ticker_is_accepted() -> None:
    assert verdict("ticker_format", order=replace(ORDER, ticker="BRK.B")).passed


def test_a_zero_quantity_is_rejected() -> None:
    found = failure(order=replace(ORDER, quantity=Decimal(0)))
    assert found is not None and found.rule == "quantity_positive"


def test_a_fractional_quantity_passes() -> None:
    assert verdict("quantity_positive", order=replace(ORDER, quantity=Decimal("0.5"))).passed


def test_a_quantity_above_the_limit_is_a_limit_breach() -> None:
    found = failure(order=replace(ORDER, quantity=Decimal(10_001), limit_price=Decimal(1)))
    assert found is not None and found.rule == "max_order_quantity" and found.limit_exceeded
    assert found.reason == "quantity 10001 exceeds the limit of 10000"


def test_a_quantity_at_the_limit_passes() -> None:
    order = replace(ORDER, quantity=Decimal(10_000), limit_price=Decimal(1))
    assert verdict("max_order_quantity", order=order).passed


def test_the_notional_uses_the_limit_price_first() -> None:
    order = replace(ORDER, quantity=Decimal(100), limit_price=Decimal(3_000))
    found = failure(order=order, ctx=replace(CALM, reference_price=Decimal(1)))
    assert found is not None and found.rule == "max_order_notional" and found.limit_exceeded
    assert found.reason == "notional 300,000.00 exceeds the limit of 250,000.00"


def test_the_notional_falls_back_to_the_reference_price() -> None:
    order = replace(ORDER, quantity=Decimal(1_000))
    found = failure(order=order, ctx=replace(CALM, reference_price=Decimal(300)))
    assert found is not None and found.rule == "max_order_notional"


def test_without_any_price_the_order_is_refused() -> None:
    # No price, no order: a notional that cannot be judged is not passed.
    found = verdict("max_order_notional", ctx=replace(CALM, reference_price=None))
    assert not found.passed and found.reason == "no reference price for AAPL"


def test_a_notional_at_the_limit_passes() -> None:
    order = replace(ORDER, quantity=Decimal(2_500), limit_price=Decimal(100))
    assert verdict("max_order_notional", order=order).passed


def test_too_many_open_orders_is_a_limit_breach() -> None:
    found = failure(ctx=replace(CALM, open_orders=50))
    assert found is not None and found.rule == "max_open_orders" and found.limit_exceeded
    assert found.reason == "50 open orders: the limit is 50"


def test_one_below_the_open_order_limit_passes() -> None:
    assert verdict("max_open_orders", ctx=replace(CALM, open_orders=49)).passed


def test_too_many_signals_per_minute_is_a_limit_breach() -> None:
    found = failure(ctx=replace(CALM, signals_last_minute=120))
    assert found is not None and found.rule == "max_signals_per_minute" and found.limit_exceeded
    assert found.reason == "120 signals in the last minute: the limit is 120"


def test_the_first_failure_is_the_first_rule_that_failed() -> None:
    ctx = replace(CALM, open_orders=99, signals_last_minute=999)
    found = failure(ctx=ctx)
    assert found is not None and found.rule == "max_open_orders"


def test_a_strategy_config_overrides_each_limit() -> None:
    limits = LIMITS.overridden_by({"limits": {
        "max_order_quantity": "5", "max_order_notional": 1000, "max_open_orders": 2,
        "max_signals_per_minute": "3"}})
    assert limits == RiskLimits(Decimal(5), Decimal(1000), 2, 3)


def test_a_config_without_limits_keeps_the_defaults() -> None:
    assert LIMITS.overridden_by({}) == LIMITS
    assert LIMITS.overridden_by({"limits": None}) == LIMITS


def test_a_partial_override_keeps_the_other_defaults() -> None:
    limits = LIMITS.overridden_by({"limits": {"max_open_orders": 1}})
    assert limits == replace(LIMITS, max_open_orders=1)


def test_an_overridden_quantity_limit_is_what_the_rule_applies() -> None:
    limits = LIMITS.overridden_by({"limits": {"max_order_quantity": 5}})
    found = failure(limits=limits)
    assert found is not None and found.reason == "quantity 10 exceeds the limit of 5"
