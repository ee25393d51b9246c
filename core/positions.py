"""Position arithmetic for fills. Long-only by default; money is Decimal throughout."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.brokerage import Side

ZERO = Decimal(0)
PRICE_PLACES = Decimal("0.000000001")


@dataclass(frozen=True)
class PositionState:
    quantity: Decimal = ZERO
    avg_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO


def apply_fill(
    position: PositionState, side: Side, quantity: Decimal, price: Decimal
) -> PositionState:
    """The position after one fill. A sell realises P&L against the average cost."""
    if side is Side.BUY:
        new_quantity = position.quantity + quantity
        cost = position.quantity * position.avg_cost + quantity * price
        avg = (cost / new_quantity).quantize(PRICE_PLACES) if new_quantity else ZERO
        return PositionState(new_quantity, avg, position.realized_pnl)
    new_quantity = position.quantity - quantity
    pnl = position.realized_pnl + quantity * (price - position.avg_cost)
    return PositionState(new_quantity, position.avg_cost if new_quantity else ZERO, pnl)


def merge(into: PositionState, other: PositionState) -> PositionState:
    """Two strategies' holdings combined (an ownership transfer moves the position)."""
    quantity = into.quantity + other.quantity
    cost = into.quantity * into.avg_cost + other.quantity * other.avg_cost
    avg = (cost / quantity).quantize(PRICE_PLACES) if quantity else ZERO
    return PositionState(quantity, avg, into.realized_pnl)


@dataclass(frozen=True)
class FillIncrement:
    quantity: Decimal
    price: Decimal


def fill_increment(
    recorded_quantity: Decimal,
    recorded_avg: Decimal | None,
    reported_quantity: Decimal,
    reported_avg: Decimal | None,
) -> FillIncrement | None:
    """The new fill implied by a cumulative report (filled quantity and average price), or
    None if the report adds nothing. Reports may arrive late, twice or out of order."""
    if reported_quantity <= recorded_quantity:
        return None
    delta = reported_quantity - recorded_quantity
    if reported_avg is None:
        raise ValueError("a report with fills must carry an average price")
    cost = reported_quantity * reported_avg - recorded_quantity * (recorded_avg or ZERO)
    price = (cost / delta).quantize(PRICE_PLACES)
    if price <= 0:  # rounding of the brokerage's average: fall back to it
        price = reported_avg
    return FillIncrement(delta, price)


def unrealized_pnl(quantity: Decimal, avg_cost: Decimal, price: Decimal | None) -> Decimal | None:
    """What the position would gain or lose if closed at `price` (None: no price)."""
    return None if price is None else (price - avg_cost) * quantity
