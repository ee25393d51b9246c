"""A strategy's signal: its shape, checked before anything is enqueued or written."""

from __future__ import annotations

import math
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from core.brokerage import (
    NEEDS_LIMIT_PRICE,
    NEEDS_STOP_PRICE,
    OrderClass,
    OrderType,
    Side,
    TimeInForce,
)
from core.errors import InvalidSignal

# Matched whole (fullmatch, ASCII only): `$` would accept a trailing newline, and Unicode
# letters would pass `upper()` into something else ("\u017ft" becomes "ST").
TICKER_PATTERN = re.compile(r"[A-Z][A-Z0-9]{0,5}([.\-][A-Z]{1,2})?", re.ASCII)
STRATEGY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)
SIGNAL_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,100}", re.ASCII)
# Beyond this a quantity is not a trading decision but a bug (the risk limits are far lower).
ABSURD_QUANTITY = Decimal("1e9")
MAX_PRICE = Decimal("1e7")
# The order store keeps 9 decimals (NUMERIC(24, 9)): a finer number would be stored as
# something else (0.0000000001 as 0), so it is refused here instead.
STEP = Decimal("0.000000001")
SHOWN = 40  # at most this much of a bad value is quoted back in an error


def shown(value: Any) -> str:
    """A bad value for an error message: its repr, cut short (a 1 MB ticker stays a line)."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def is_name(pattern: re.Pattern[str], value: object) -> bool:
    """`value` is a str matching `pattern` whole, in ASCII."""
    return isinstance(value, str) and value.isascii() and pattern.fullmatch(value) is not None


_NAMESPACE = uuid.UUID("6f2b7c52-8f1e-4d0e-9a53-7b4f0f3a8e11")


def client_order_id_for(strategy: str, signal_id: str) -> str:
    """Deterministic, so a repeated signal maps to the same order (and brokerage order)."""
    return "arb-" + uuid.uuid5(_NAMESPACE, f"{strategy}\x1f{signal_id}").hex


def _decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be finite")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {shown(value)}") from None
    if not number.is_finite():
        raise ValueError("must be finite")
    return number


def _bounded(number: Decimal, upper: Decimal, what: str) -> Decimal:
    """Positive, below `upper`, and exactly representable with 9 decimals."""
    if number <= 0:
        raise ValueError("must be greater than 0")
    if number >= upper:
        raise ValueError(f"{shown(str(number))} is absurdly large for a {what}")
    if number != number.quantize(STEP):
        raise ValueError("has more than 9 decimal places")
    return number


def _price(value: Any, field: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return _bounded(_decimal(value, field), MAX_PRICE, "price")
    except ValueError as exc:
        raise ValueError(f"must be a positive price below 10,000,000: {exc}") from None


class TakeProfitLeg(BaseModel):
    """A bracket's or OCO's profit-taking limit sell (Alpaca's `take_profit`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit_price: Decimal

    @field_validator("limit_price", mode="before")
    @classmethod
    def _limit(cls, value: Any) -> Decimal | None:
        if value is None:
            raise ValueError("required")
        return _price(value, "limit_price")


class StopLossLeg(BaseModel):
    """The protective stop (or stop-limit) leg (Alpaca's `stop_loss`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stop_price: Decimal
    limit_price: Decimal | None = None

    @field_validator("stop_price", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Decimal | None:
        if value is None:
            raise ValueError("required")
        return _price(value, "stop_price")

    @field_validator("limit_price", mode="before")
    @classmethod
    def _limit(cls, value: Any) -> Decimal | None:
        return _price(value, "limit_price")


class Signal(BaseModel):
    """A validated signal. Build it with `Signal.parse(...)` to get InvalidSignal errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    signal_id: str
    ticker: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    order_class: OrderClass = OrderClass.SIMPLE
    take_profit: TakeProfitLeg | None = None
    stop_loss: StopLossLeg | None = None

    @model_validator(mode="before")
    @classmethod
    def _infer_class(cls, data: Any) -> Any:
        """Legs without an order_class: both make a bracket, one an oto."""
        if isinstance(data, dict) and data.get("order_class") is None:
            legs = [data.get("take_profit"), data.get("stop_loss")]
            given = sum(leg is not None for leg in legs)
            data = {k: v for k, v in data.items() if k != "order_class"}
            if given:
                data["order_class"] = "bracket" if given == 2 else "oto"
        return data

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy(cls, value: object) -> str:
        if is_name(STRATEGY_PATTERN, value):
            return str(value)
        raise ValueError("must be a strategy name like 'long_term' (lowercase, a-z0-9_)")

    @field_validator("signal_id", mode="before")
    @classmethod
    def _signal_id(cls, value: object) -> str:
        if is_name(SIGNAL_ID_PATTERN, value):
            return str(value)
        raise ValueError("must be 1-100 characters of A-Z a-z 0-9 _ . : -")

    @field_validator("ticker", mode="before")
    @classmethod
    def _ticker(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        ticker = value.strip().upper() if value.isascii() else value
        if not is_name(TICKER_PATTERN, ticker):
            raise ValueError(
                f"{shown(value)} is not a ticker (1-6 ASCII letters/digits, e.g. AAPL, BRK.B)"
            )
        return ticker

    @field_validator("side", "order_type", "time_in_force", "order_class", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) and value.isascii() else value

    @field_validator("quantity", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Decimal:
        return _bounded(_decimal(value, "quantity"), ABSURD_QUANTITY, "quantity")

    @field_validator("limit_price", "stop_price", "trail_price", mode="before")
    @classmethod
    def _prices(cls, value: Any) -> Decimal | None:
        return _price(value, "price")

    @field_validator("trail_percent", mode="before")
    @classmethod
    def _trail_percent(cls, value: Any) -> Decimal | None:
        if value is None:
            return None
        percent = _decimal(value, "trail_percent")
        if not 0 < percent < 100:
            raise ValueError("must be between 0 and 100 (exclusive)")
        return percent

    @model_validator(mode="after")
    def _prices_fit_type(self) -> Signal:
        """Each order type takes exactly the prices Alpaca's v2 API defines for it."""
        kind = self.order_type.value
        # An OCO's limit is its take_profit's.
        oco = self.order_class is OrderClass.OCO
        if self.order_type in NEEDS_LIMIT_PRICE and self.limit_price is None and not oco:
            raise ValueError(f"limit_price: required for a {kind} order")
        if self.order_type not in NEEDS_LIMIT_PRICE and self.limit_price is not None:
            raise ValueError(f"limit_price: a {kind} order takes no limit price")
        if self.order_type in NEEDS_STOP_PRICE and self.stop_price is None:
            raise ValueError(f"stop_price: required for a {kind} order")
        if self.order_type not in NEEDS_STOP_PRICE and self.stop_price is not None:
            raise ValueError(f"stop_price: a {kind} order takes no stop price")
        trails = (self.trail_price is not None) + (self.trail_percent is not None)
        if self.order_type is OrderType.TRAILING_STOP and trails != 1:
            raise ValueError("trail_price: a trailing_stop needs one of trail_price, trail_percent")
        if self.order_type is not OrderType.TRAILING_STOP and trails:
            raise ValueError(f"trail_price: a {kind} order takes no trail")
        self._check_class()
        return self

    def _check_class(self) -> None:
        cls = self.order_class
        if cls is OrderClass.SIMPLE:
            return
        tif = self.time_in_force
        if tif not in (TimeInForce.DAY, TimeInForce.GTC):
            raise ValueError(f"time_in_force: a {cls.value} order must be day or gtc")
        if self.order_type is OrderType.TRAILING_STOP:
            raise ValueError(f"order_type: a trailing_stop cannot open a {cls.value} order")
        both = self.take_profit is not None and self.stop_loss is not None
        if cls in (OrderClass.BRACKET, OrderClass.OCO) and not both:
            raise ValueError(f"stop_loss: a {cls.value} order needs take_profit and stop_loss")
        if cls is OrderClass.OTO and (both or (self.take_profit, self.stop_loss) == (None, None)):
            raise ValueError("stop_loss: an oto order needs one of take_profit, stop_loss")
        if cls is OrderClass.OCO and self.order_type is not OrderType.LIMIT:
            raise ValueError("order_type: an oco order is a limit order")

    @property
    def legs(self) -> bool:
        return self.order_class is not OrderClass.SIMPLE

    @property
    def client_order_id(self) -> str:
        return client_order_id_for(self.strategy, self.signal_id)

    @classmethod
    def parse(cls, data: Any) -> Signal:
        """Validate raw input; raise InvalidSignal naming the first bad field."""
        if not isinstance(data, dict):
            raise InvalidSignal("signal", f"must be an object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"]) or "signal"
            message = str(error["msg"]).removeprefix("Value error, ")
            for named in _NAMED_IN_MESSAGE:
                if message.startswith(f"{named}: "):
                    field, message = named, message.removeprefix(f"{named}: ")
                    break
            raise InvalidSignal(field, message) from None

    def to_message(self) -> dict[str, Any]:
        """JSON-safe form for the queue (Decimals as strings); fields left at their default
        are left out, so a plain signal's message stays as it was."""
        return self.model_dump(mode="json", exclude_defaults=True) | {
            key: value for key, value in self.model_dump(mode="json").items() if key in _ALWAYS_SENT
        }


_NAMED_IN_MESSAGE = (
    "limit_price", "stop_price", "trail_price", "time_in_force", "order_type", "stop_loss",
)  # fmt: skip
_ALWAYS_SENT = ("strategy", "signal_id", "ticker", "side", "quantity", "order_type",
                "limit_price", "time_in_force")  # fmt: skip
