"""The brokerage as Arbiter sees it: an interface, the data it returns, and how its statuses
map onto our order states. The brokerage is the source of truth; adapters live outside core."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from core.states import OrderState


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TRAILING_STOP = "trailing_stop"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    OPG = "opg"
    CLS = "cls"


class OrderClass(StrEnum):
    SIMPLE = "simple"
    BRACKET = "bracket"
    OCO = "oco"
    OTO = "oto"


# Which prices each order type takes (Alpaca v2): required ones; the rest must be absent.
NEEDS_LIMIT_PRICE = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
NEEDS_STOP_PRICE = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})
STOP_TYPES = frozenset({OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP})


@dataclass(frozen=True)
class TakeProfit:
    limit_price: Decimal


@dataclass(frozen=True)
class StopLoss:
    stop_price: Decimal
    limit_price: Decimal | None = None


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    order_class: OrderClass = OrderClass.SIMPLE
    take_profit: TakeProfit | None = None
    stop_loss: StopLoss | None = None


@dataclass(frozen=True)
class ReplaceRequest:
    """Alpaca's PATCH /v2/orders/{id}: what changes, and the replacement's client_order_id."""

    client_order_id: str
    quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail: Decimal | None = None


@dataclass(frozen=True)
class BrokerOrder:
    brokerage_order_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    status: str
    filled_quantity: Decimal = Decimal(0)
    avg_fill_price: Decimal | None = None
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    reject_reason: str | None = None
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    order_class: OrderClass = OrderClass.SIMPLE
    legs: tuple[BrokerOrder, ...] = field(default_factory=tuple)
    replaced_by: str | None = None
    replaces: str | None = None

    @property
    def state(self) -> OrderState:
        return state_for_status(self.status)


@dataclass(frozen=True)
class BrokerPosition:
    symbol: str
    quantity: Decimal
    avg_entry_price: Decimal


@dataclass(frozen=True)
class BrokerAccount:
    account_id: str
    status: str
    cash: Decimal
    buying_power: Decimal
    equity: Decimal


# Alpaca's order statuses onto ours. Anything accepted but not yet filled is ORDER_SENT.
_STATUS_TO_STATE: dict[str, OrderState] = {
    "new": OrderState.ORDER_SENT,
    "accepted": OrderState.ORDER_SENT,
    "pending_new": OrderState.ORDER_SENT,
    "accepted_for_bidding": OrderState.ORDER_SENT,
    "pending_replace": OrderState.ORDER_SENT,
    "pending_cancel": OrderState.ORDER_SENT,
    # The order was replaced by another (its successor carries on): this one is over.
    "replaced": OrderState.CANCELLED,
    "calculated": OrderState.ORDER_SENT,
    "held": OrderState.ORDER_SENT,
    "suspended": OrderState.ORDER_SENT,
    "stopped": OrderState.ORDER_SENT,
    "partially_filled": OrderState.PARTIAL_FILLED,
    "filled": OrderState.FULLY_FILLED,
    "done_for_day": OrderState.CANCELLED,
    "canceled": OrderState.CANCELLED,
    "expired": OrderState.CANCELLED,
    "rejected": OrderState.REJECTED,
}


def state_for_status(status: str) -> OrderState:
    """Map a brokerage status onto an order state; unknown statuses are a protocol error."""
    from core.errors import BrokerageProtocolError

    try:
        return _STATUS_TO_STATE[status.lower()]
    except KeyError:
        raise BrokerageProtocolError(f"unknown brokerage order status {status!r}") from None


class Brokerage(Protocol):
    """What Arbiter needs from a brokerage. Errors raised are those of core.errors:
    BrokerageUnavailable (transient: outcome unknown), BrokerageRejected / DuplicateClientOrderId,
    BrokerageAuthError, BrokerageProtocolError."""

    def submit(self, request: OrderRequest) -> BrokerOrder: ...

    def get_by_client_order_id(self, client_order_id: str) -> BrokerOrder | None: ...

    def list_open_orders(self) -> list[BrokerOrder]: ...

    def list_orders_since(self, since: datetime) -> list[BrokerOrder]:
        """Every order (open and closed) submitted at or after `since`, paged as needed."""
        ...

    def cancel(self, brokerage_order_id: str) -> None: ...

    def get(self, brokerage_order_id: str) -> BrokerOrder:
        """One order by the brokerage's id (legs included)."""
        ...

    def replace(self, brokerage_order_id: str, request: ReplaceRequest) -> BrokerOrder:
        """Replace an open order; the answer is the new order (the old one ends `replaced`)."""
        ...

    def list_positions(self) -> list[BrokerPosition]: ...

    def account(self) -> BrokerAccount: ...
