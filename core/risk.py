"""Pre-trade risk: pure rules, each returning a verdict with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.signals import TICKER_PATTERN, is_name


@dataclass(frozen=True)
class RiskLimits:
    max_order_quantity: Decimal
    max_order_notional: Decimal
    max_open_orders: int
    max_signals_per_minute: int

    def overridden_by(self, config: dict[str, Any]) -> RiskLimits:
        """A strategy's config (`{"limits": {...}}`) overrides any default."""
        limits = config.get("limits") or {}
        return RiskLimits(
            max_order_quantity=Decimal(
                str(limits.get("max_order_quantity", self.max_order_quantity))
            ),
            max_order_notional=Decimal(
                str(limits.get("max_order_notional", self.max_order_notional))
            ),
            max_open_orders=int(limits.get("max_open_orders", self.max_open_orders)),
            max_signals_per_minute=int(
                limits.get("max_signals_per_minute", self.max_signals_per_minute)
            ),
        )


@dataclass(frozen=True)
class OrderFacts:
    ticker: str
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None = None


def notional_price(order: OrderFacts, reference: Decimal | None) -> Decimal | None:
    """The price an order's notional is judged at: its limit; for a stop, the higher of its
    stop and the market (it trades at about the stop once triggered, or at once if the market
    is already through it); else the market's reference price."""
    if order.limit_price is not None:
        return order.limit_price
    if order.stop_price is not None:
        return max(order.stop_price, reference) if reference is not None else order.stop_price
    return reference


@dataclass(frozen=True)
class RiskContext:
    strategy_active: bool
    kill_switch_on: bool
    open_orders: int  # the strategy's live orders, this one excluded
    signals_last_minute: int  # the strategy's signals in the last minute, this one excluded
    reference_price: Decimal | None  # the market's price (latest trade, else quote mid)


@dataclass(frozen=True)
class RiskVerdict:
    rule: str
    passed: bool
    reason: str
    limit_exceeded: bool = False  # a breach of a numeric limit: RISK_LIMIT_EXCEEDED


def evaluate(order: OrderFacts, limits: RiskLimits, ctx: RiskContext) -> list[RiskVerdict]:
    """Every rule's verdict, in a fixed order; the order passes when all passed."""
    price = notional_price(order, ctx.reference_price)
    notional = order.quantity * price if price is not None else None
    verdicts = [
        RiskVerdict(
            "kill_switch", not ctx.kill_switch_on, "kill switch is on: no new orders accepted"
        ),
        RiskVerdict("strategy_active", ctx.strategy_active, "strategy is inactive"),
        RiskVerdict(
            "ticker_format",
            is_name(TICKER_PATTERN, order.ticker),
            f"{order.ticker!r} is not a valid ticker",
        ),
        RiskVerdict("quantity_positive", order.quantity > 0, "quantity must be greater than 0"),
        RiskVerdict(
            "max_order_quantity",
            order.quantity <= limits.max_order_quantity,
            f"quantity {order.quantity} exceeds the limit of {limits.max_order_quantity}",
            limit_exceeded=True,
        ),
        # Never passed silently: without a price the notional limit cannot be checked.
        RiskVerdict("max_order_notional", False, f"no reference price for {order.ticker}")
        if notional is None
        else RiskVerdict(
            "max_order_notional",
            notional <= limits.max_order_notional,
            f"notional {notional:,.2f} exceeds the limit of {limits.max_order_notional:,.2f}",
            limit_exceeded=True,
        ),
        RiskVerdict(
            "max_open_orders",
            ctx.open_orders < limits.max_open_orders,
            f"{ctx.open_orders} open orders: the limit is {limits.max_open_orders}",
            limit_exceeded=True,
        ),
        RiskVerdict(
            "max_signals_per_minute",
            ctx.signals_last_minute < limits.max_signals_per_minute,
            f"{ctx.signals_last_minute} signals in the last minute: the limit is "
            f"{limits.max_signals_per_minute}",
            limit_exceeded=True,
        ),
    ]
    return verdicts


def first_failure(verdicts: list[RiskVerdict]) -> RiskVerdict | None:
    return next((v for v in verdicts if not v.passed), None)
