"""Specs become stored orders: an order with its bracket / oco / oto legs, or the order that
replaces another. Alpaca's price rules for legs are checked here, against the base price."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from brokersim.config import SimConfig
from brokersim.ledger import fmt_ts
from brokersim.records import StoredOrder
from brokersim.specs import OrderSpec, ReplaceSpec
from brokersim.triggers import trail
from brokersim.validate import ApiError, invalid

_CENT = Decimal("0.01")


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, 42210000, message)


def _check_leg_prices(spec: OrderSpec, base: Decimal) -> None:
    """Alpaca's rule: a buy entry's take-profit sits at least a cent above the base price and
    its stop-loss at least a cent below (mirrored for a sell entry)."""
    buy = spec.side == "buy"
    if spec.take_profit is not None:
        ok = spec.take_profit >= base + _CENT if buy else spec.take_profit <= base - _CENT
        if not ok:
            bound = "base_price + 0.01" if buy else "base_price - 0.01"
            relation = ">=" if buy else "<="
            raise _unprocessable(f"take_profit.limit_price must be {relation} {bound}")
    if spec.stop_loss is not None:
        stop = spec.stop_loss.stop_price
        ok = stop <= base - _CENT if buy else stop >= base + _CENT
        if not ok:
            bound = "base_price - 0.01" if buy else "base_price + 0.01"
            relation = "<=" if buy else ">="
            raise _unprocessable(f"stop_loss.stop_price must be {relation} {bound}")


def build_orders(
    spec: OrderSpec,
    *,
    config: SimConfig,
    stamp: Callable[[], datetime],
    market_price: Decimal,
) -> list[StoredOrder]:
    """The main order, then its legs (status `held` until a bracket/oto entry fills)."""
    now = stamp()
    start = now.timestamp() + config.fill_latency_ms / 1000
    expires = (
        fmt_ts(now + timedelta(seconds=config.day_length_s))
        if spec.time_in_force == "day"
        else None
    )
    main = StoredOrder(
        id=str(uuid.uuid4()),
        client_order_id=spec.client_order_id or str(uuid.uuid4()),
        symbol=spec.symbol,
        side=spec.side,
        type=spec.type,
        time_in_force=spec.time_in_force,
        qty=spec.qty,
        limit_price=spec.limit_price,
        extended_hours=spec.extended_hours,
        status="new",
        filled_qty=Decimal(0),
        filled_avg_price=None,
        submitted_at=fmt_ts(now),
        updated_at=fmt_ts(now),
        expires_at=expires,
        next_fill_at=start,
        order_class=spec.order_class,
        stop_price=spec.stop_price,
        trail_price=spec.trail_price,
        trail_percent=spec.trail_percent,
    )
    if spec.type == "trailing_stop":
        hwm, stop = trail(main, market_price)
        main = replace(main, hwm=hwm, stop_price=stop)
    if spec.order_class in ("bracket", "oto"):
        base = {"limit": spec.limit_price, "stop_limit": spec.limit_price, "stop": spec.stop_price}
        _check_leg_prices(spec, base.get(spec.type) or market_price)
    opposite = "sell" if spec.side == "buy" else "buy"
    exit_side = spec.side if spec.order_class == "oco" else opposite
    leg_status = "new" if spec.order_class == "oco" else "held"

    def leg(role: str, order_type: str, limit: Decimal | None, stop: Decimal | None) -> StoredOrder:
        at = stamp()
        return replace(
            main,
            id=str(uuid.uuid4()),
            client_order_id=str(uuid.uuid4()),
            side=exit_side,
            type=order_type,
            limit_price=limit,
            stop_price=stop,
            trail_price=None,
            trail_percent=None,
            hwm=None,
            status=leg_status,
            submitted_at=fmt_ts(at),
            updated_at=fmt_ts(at),
            next_fill_at=start if leg_status == "new" else None,
            parent_id=main.id,
            leg_role=role,
        )

    legs = []
    if spec.take_profit is not None and spec.order_class != "oco":
        legs.append(leg("take_profit", "limit", spec.take_profit, None))
    if spec.stop_loss is not None:
        sl = spec.stop_loss
        sl_type = "stop" if sl.limit_price is None else "stop_limit"
        legs.append(leg("stop_loss", sl_type, sl.limit_price, sl.stop_price))
    if spec.order_class == "oco":
        main = replace(main, leg_role="take_profit")
    return [main, *legs]


def build_replacement(
    old: StoredOrder,
    spec: ReplaceSpec,
    *,
    config: SimConfig,
    now: datetime,
    market_price: Decimal,
) -> StoredOrder:
    """The order that takes `old`'s place; refuses what Alpaca refuses."""
    if not old.is_open:
        raise _unprocessable("unable to replace order, order is not open")
    if spec.empty:
        raise ApiError(403, 40310000, "order parameters are not changed")
    if spec.limit_price is not None and old.type not in ("limit", "stop_limit"):
        raise invalid(f"limit_price is not applicable to {old.type} orders")
    if spec.stop_price is not None and old.type not in ("stop", "stop_limit"):
        raise invalid(f"stop_price is not applicable to {old.type} orders")
    if spec.trail is not None and old.type != "trailing_stop":
        raise invalid(f"trail is not applicable to {old.type} orders")
    if spec.trail is not None and old.trail_percent is not None and spec.trail >= 100:
        raise invalid("trail_percent must be < 100")
    done = old.prior_filled_qty + old.filled_qty
    qty = spec.qty if spec.qty is not None else old.qty
    if qty <= done:
        raise _unprocessable("unable to replace order, qty must be > filled_qty")
    tif = spec.time_in_force or old.time_in_force
    if tif in ("ioc", "fok", "opg", "cls") and old.type not in ("market", "limit"):
        raise invalid(f"time_in_force {tif} is supported with market and limit orders only")
    if old.order_class != "simple" and tif not in ("day", "gtc"):
        raise invalid(f"{old.order_class} orders must have time_in_force day or gtc")
    stamp = fmt_ts(now)
    new = replace(
        old,
        id=str(uuid.uuid4()),
        client_order_id=spec.client_order_id or str(uuid.uuid4()),
        qty=qty,
        time_in_force=tif,
        limit_price=spec.limit_price if spec.limit_price is not None else old.limit_price,
        stop_price=spec.stop_price if spec.stop_price is not None else old.stop_price,
        status="held" if old.status == "held" else "new",
        filled_qty=Decimal(0),
        filled_avg_price=None,
        submitted_at=stamp,
        updated_at=stamp,
        filled_at=None,
        canceled_at=None,
        expired_at=None,
        failed_at=None,
        expires_at=(fmt_ts(now + timedelta(seconds=config.day_length_s)) if tif == "day" else None),
        next_fill_at=(
            None if old.status == "held" else now.timestamp() + config.fill_latency_ms / 1000
        ),
        triggered=old.triggered and spec.stop_price is None,
        replaces=old.id,
        replaced_by=None,
        replaced_at=None,
        prior_filled_qty=done,
    )
    if spec.trail is not None and old.trail_percent is not None:
        new = replace(new, trail_percent=spec.trail)
    elif spec.trail is not None:
        new = replace(new, trail_price=spec.trail)
    if new.type == "trailing_stop":
        hwm, stop = trail(new, market_price)
        new = replace(new, hwm=hwm, stop_price=stop)
    terms = ("qty", "time_in_force", "limit_price", "stop_price", "trail_price", "trail_percent")
    changed = any(getattr(new, f) != getattr(old, f) for f in terms)
    if not changed and spec.client_order_id is None:
        raise ApiError(403, 40310000, "order parameters are not changed")
    return new
