"""Pure bookkeeping shared by the store and the engine: statuses, slicing, position arithmetic
and the string formats Alpaca uses on the wire."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_DOWN, Decimal

# "held": a bracket or OTO leg waiting for its entry to fill (open, but not working yet).
OPEN_STATUSES = ("new", "accepted", "partially_filled", "held")
_NANO = Decimal("0.000000001")


def fmt_ts(when: datetime) -> str:
    """Alpaca's timestamp form, fixed width so strings sort in time order."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fmt_dec(value: Decimal) -> str:
    """A decimal as Alpaca writes numbers: a plain string, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", ""} else text


def round_price(value: Decimal) -> Decimal:
    return Decimal(fmt_dec(value.quantize(Decimal("0.000001"))))


def status_after_fill(qty: Decimal, filled: Decimal) -> str:
    return "filled" if filled >= qty else "partially_filled"


def slice_quantity(qty: Decimal, filled: Decimal, slices: int) -> Decimal:
    """The next slice of an order cut into `slices` near-equal parts: cumulative targets
    qty*k/slices (whole shares when the order is whole), the last target being qty itself."""
    whole = qty == qty.to_integral_value()
    for k in range(1, slices + 1):
        exact = qty * k / slices
        target = exact.to_integral_value(ROUND_DOWN) if whole else exact.quantize(_NANO, ROUND_DOWN)
        if k == slices:
            target = qty
        if target > filled:
            return target - filled
    return Decimal(0)


def apply_to_position(
    qty: Decimal, avg: Decimal, delta: Decimal, price: Decimal
) -> tuple[Decimal, Decimal]:
    """A signed fill onto a signed position: adding averages in, reducing keeps the average,
    crossing zero starts a new position at the fill price."""
    new_qty = qty + delta
    if new_qty == 0:
        return Decimal(0), Decimal(0)
    if qty == 0 or (qty > 0) == (delta > 0):
        return new_qty, (abs(qty) * avg + abs(delta) * price) / abs(new_qty)
    if (new_qty > 0) == (qty > 0):
        return new_qty, avg
    return new_qty, price
