"""Order requests as Alpaca's v2 API defines them, validated into typed specs or refused with an
Alpaca-shaped 4xx. What the simulator cannot do it refuses here with a reason."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from brokersim.validate import SYMBOL_RE, ApiError, choice_field, decimal_field, invalid

TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
TIFS = ("day", "gtc", "opg", "cls", "ioc", "fok")
CLASSES = ("simple", "bracket", "oco", "oto")


@dataclass(frozen=True)
class StopLoss:
    stop_price: Decimal
    limit_price: Decimal | None


@dataclass(frozen=True)
class OrderSpec:
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    limit_price: Decimal | None
    client_order_id: str | None
    extended_hours: bool
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    order_class: str = "simple"
    take_profit: Decimal | None = None  # the take-profit leg's limit price
    stop_loss: StopLoss | None = None


@dataclass(frozen=True)
class ReplaceSpec:
    qty: Decimal | None
    time_in_force: str | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    trail: Decimal | None
    client_order_id: str | None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__dataclass_fields__)


def _client_order_id(body: dict[str, object]) -> str | None:
    value = body.get("client_order_id")
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 128):
        raise invalid("client_order_id must be a string of 1 to 128 characters")
    return value


def _leg(body: dict[str, object], name: str) -> dict[str, object] | None:
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid(f"{name} must be an object")
    return raw


def _prices(
    body: dict[str, object], order_type: str, order_class: str
) -> dict[str, Decimal | None]:
    """limit/stop/trail fields: required where the type needs them, refused where it has none."""
    needs = {
        "market": (),
        "limit": ("limit_price",),
        "stop": ("stop_price",),
        "stop_limit": ("limit_price", "stop_price"),
        "trailing_stop": (),
    }[order_type]
    prices: dict[str, Decimal | None] = {}
    for name in ("limit_price", "stop_price", "trail_price", "trail_percent"):
        required = name in needs and not (name == "limit_price" and order_class == "oco")
        prices[name] = decimal_field(body, name, required=required)
        allowed = name in needs or (order_type == "trailing_stop" and name.startswith("trail"))
        if prices[name] is not None and not allowed:
            raise invalid(f"{name} is not applicable to {order_type} orders")
    if order_type == "trailing_stop":
        if (prices["trail_price"] is None) == (prices["trail_percent"] is None):
            raise invalid("trailing_stop orders need exactly one of trail_price or trail_percent")
        percent = prices["trail_percent"]
        if percent is not None and percent >= 100:
            raise invalid("trail_percent must be < 100")
    return prices


def _classes(body: dict[str, object], spec: OrderSpec) -> OrderSpec:
    """Check and attach take_profit / stop_loss for bracket, oco and oto."""
    take_profit, stop_loss = _leg(body, "take_profit"), _leg(body, "stop_loss")
    cls = spec.order_class
    if cls == "simple":
        if take_profit or stop_loss:
            raise invalid("take_profit and stop_loss need order_class bracket, oco or oto")
        return spec
    if spec.time_in_force not in ("day", "gtc"):
        raise invalid(f"{cls} orders must have time_in_force day or gtc")
    if spec.extended_hours:
        raise invalid(f"extended hours are not supported for {cls} orders")
    if spec.type == "trailing_stop":
        raise invalid(f"trailing_stop is not supported as the main order of {cls} orders")
    if cls in ("bracket", "oco") and not (take_profit and stop_loss):
        raise invalid(f"{cls} orders require take_profit.limit_price and stop_loss.stop_price")
    if cls == "oto" and bool(take_profit) == bool(stop_loss):
        raise invalid("oto orders require either take_profit or stop_loss (not both)")
    if cls == "oco" and spec.type != "limit":
        raise invalid("oco orders must be limit orders")
    tp = decimal_field(take_profit, "limit_price", required=True) if take_profit else None
    sl = None
    if stop_loss:
        for unsupported in ("trail_price", "trail_percent"):
            if stop_loss.get(unsupported) is not None:
                raise invalid(
                    f"stop_loss.{unsupported} is not supported:"
                    " a stop_loss leg is a stop or stop_limit order"
                )
        stop = decimal_field(stop_loss, "stop_price", required=True)
        assert stop is not None
        sl = StopLoss(stop, decimal_field(stop_loss, "limit_price", required=False))
    limit_price = spec.limit_price
    if cls == "oco":
        if limit_price is not None and limit_price != tp:
            raise invalid("limit_price of an oco order must equal take_profit.limit_price")
        limit_price = tp
        assert tp is not None and sl is not None
        profit_above = spec.side == "sell"
        if (tp <= sl.stop_price) if profit_above else (tp >= sl.stop_price):
            relation = ">" if profit_above else "<"
            raise ApiError(
                422,
                42210000,
                f"take_profit.limit_price must be {relation} stop_loss.stop_price"
                f" for {spec.side} oco orders",
            )
    return OrderSpec(
        **{**spec.__dict__, "limit_price": limit_price, "take_profit": tp, "stop_loss": sl}
    )


def parse_order(body: object) -> OrderSpec:
    """Validate a POST /v2/orders body."""
    if not isinstance(body, dict):
        raise ApiError(400, 40010000, "request body format is invalid")
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise invalid("symbol is required")
    symbol = symbol.strip().upper()
    if not SYMBOL_RE.match(symbol):
        raise invalid(f"invalid symbol: {symbol!r}")
    if body.get("notional") is not None:
        raise invalid("notional orders are not supported by the simulator")
    qty = decimal_field(body, "qty", required=True)
    assert qty is not None
    side = choice_field(body, "side", ("buy", "sell"), None)
    order_type = choice_field(body, "type", TYPES, None)
    tif = choice_field(body, "time_in_force", TIFS, None)
    raw_class = body.get("order_class") or "simple"
    if raw_class == "mleg":
        raise invalid("order_class mleg (multi-leg options) is not supported by the simulator")
    order_class = choice_field({"order_class": raw_class}, "order_class", CLASSES, None)
    if tif in ("ioc", "fok", "opg", "cls") and order_type not in ("market", "limit"):
        raise invalid(f"time_in_force {tif} is supported with market and limit orders only")
    extended = body.get("extended_hours", False)
    if not isinstance(extended, bool):
        raise invalid("extended_hours must be a boolean")
    prices = _prices(body, order_type, order_class)
    spec = OrderSpec(
        symbol,
        side,
        order_type,
        tif,
        qty,
        prices["limit_price"],
        _client_order_id(body),
        extended,
        stop_price=prices["stop_price"],
        trail_price=prices["trail_price"],
        trail_percent=prices["trail_percent"],
        order_class=order_class,
    )
    return _classes(body, spec)


def parse_replace(body: object) -> ReplaceSpec:
    """Validate a PATCH /v2/orders/{id} body (every field optional)."""
    if not isinstance(body, dict):
        raise ApiError(400, 40010000, "request body format is invalid")
    known = {"qty", "time_in_force", "limit_price", "stop_price", "trail", "client_order_id"}
    unknown = set(body) - known
    if unknown:
        raise invalid(f"unknown field(s) for replace: {', '.join(sorted(unknown))}")
    tif = body.get("time_in_force")
    return ReplaceSpec(
        qty=decimal_field(body, "qty", required=False),
        time_in_force=None if tif is None else choice_field(body, "time_in_force", TIFS, None),
        limit_price=decimal_field(body, "limit_price", required=False),
        stop_price=decimal_field(body, "stop_price", required=False),
        trail=decimal_field(body, "trail", required=False),
        client_order_id=_client_order_id(body),
    )
