"""Pure price logic: when a stop is elected, where a trailing stop sits, when a limit crosses."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from brokersim.records import StoredOrder

_CENT = Decimal("0.01")
STOP_TYPES = ("stop", "stop_limit", "trailing_stop")


def trail(order: StoredOrder, price: Decimal) -> tuple[Decimal, Decimal]:
    """(hwm, stop_price) after seeing `price`: a sell trails the high-water mark from below,
    a buy trails the low-water mark from above."""
    sell = order.side == "sell"
    mark = price if order.hwm is None else (max if sell else min)(order.hwm, price)
    if order.trail_price is not None:
        offset = order.trail_price
    else:
        offset = mark * (order.trail_percent or Decimal(0)) / 100
    stop = mark - offset if sell else mark + offset
    return mark, max(stop.quantize(_CENT, ROUND_HALF_EVEN), _CENT)


def stop_elected(order: StoredOrder, price: Decimal) -> bool:
    """A sell stop fires at or below its stop price, a buy stop at or above."""
    if order.type not in STOP_TYPES or order.triggered:
        return True
    if order.stop_price is None:
        return False
    return price <= order.stop_price if order.side == "sell" else price >= order.stop_price


def limit_crossed(order: StoredOrder, price: Decimal) -> bool:
    """Whether the order may execute at `price` (market and elected stops always may)."""
    if order.type not in ("limit", "stop_limit") or order.limit_price is None:
        return True
    return price <= order.limit_price if order.side == "buy" else price >= order.limit_price
