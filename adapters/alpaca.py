"""The brokerage adapter over the official alpaca-py SDK (Alpaca Trading API v2, or the bundled
simulator at the same URL shape).

alpaca-py's own errors are translated into core.errors with `raise ... from exc`:

    requests Timeout / ConnectionError, HTTP 5xx, HTTP 429    -> BrokerageUnavailable
    HTTP 401, 403 about access (no code, or "unauthorized"...) -> BrokerageAuthError
    HTTP 403 with a business reason ("insufficient buying power") -> BrokerageRejected
    HTTP 422 "client_order_id must be unique"                 -> DuplicateClientOrderId
    any other HTTP 4xx                                        -> BrokerageRejected(reason)
    a body that is not JSON or not the expected shape         -> BrokerageProtocolError

Every request carries a timeout, and alpaca-py's 429 sleep-and-retry loop is switched off:
Celery owns retries."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import Order, Position, TradeAccount
from alpaca.trading.requests import GetOrdersRequest
from pydantic import BaseModel, ValidationError

from core.brokerage import (
    BrokerAccount,
    BrokerOrder,
    BrokerPosition,
    OrderClass,
    OrderRequest,
    OrderType,
    ReplaceRequest,
    Side,
    TimeInForce,
)
from core.errors import (
    BrokerageAuthError,
    BrokerageProtocolError,
    BrokerageRejected,
    BrokerageUnavailable,
    DuplicateClientOrderId,
)
from core.settings import Settings

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

PAGE_SIZE = 500  # Alpaca's maximum for GET /v2/orders
_TICK = timedelta(microseconds=1)


class _TimeoutSession(requests.Session):
    """A requests session that never waits forever: alpaca-py passes no timeout of its own.

    The environment's proxy and CA bundle settings for `url` are read once, here: requests
    would otherwise scan the whole environment on every request, which cost the hot path
    more than the rest of a brokerage call's Python (.netrc is not consulted: Alpaca
    authenticates by headers)."""

    def __init__(self, timeout_s: float, url: str) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        self.proxies.update(requests.utils.get_environ_proxies(url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self.verify = bundle
        self.trust_env = False

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, *args, **kwargs)


RestClient = TypeVar("RestClient", bound=RESTClient)


def one_attempt(client: RestClient, url: str, timeout_s: float) -> RestClient:
    """An alpaca-py client that makes one attempt per call, with a timeout. alpaca-py sleeps
    and retries 429s itself (3 times, 3 s apart by default); with `_retry = 0` it raises at
    once, and the caller (Celery, or the risk check) decides what no answer means."""
    client._session = _TimeoutSession(timeout_s, url)
    client._retry = 0
    client._retry_wait = 0
    return client


def _error_body(exc: APIError) -> tuple[int | None, str]:
    """Alpaca's {"code", "message"}, or the raw text when the error body is not JSON."""
    text = str(exc)
    try:
        body = json.loads(text)
    except ValueError:
        return None, text[:200]
    if isinstance(body, dict):
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body.get("message", text))
    return None, text[:200]


# Words of a 403 that is about who is asking, not about the order.
_CREDENTIAL_WORDS = (
    "unauthorized",
    "not authorized",
    "forbidden",
    "authenticat",
    "api key",
    "access key",
    "secret",
    "credential",
    "permission",
)


def _refuses_credentials(code: int | None, message: str) -> bool:
    """Alpaca answers 403 both for credentials and for business refusals; only a body with an
    error code and a message that is not about access is a refusal of the order."""
    text = message.lower()
    return code is None or any(word in text for word in _CREDENTIAL_WORDS)


def translate(exc: Exception) -> Exception:
    """The core.errors exception for a vendor exception (raise the result `from exc`)."""
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return BrokerageProtocolError(f"brokerage answered with a body that is not JSON: {exc}")
    if isinstance(
        exc,
        requests.exceptions.Timeout
        | requests.exceptions.ConnectionError
        | requests.exceptions.ChunkedEncodingError,
    ):
        return BrokerageUnavailable(f"brokerage unreachable: {type(exc).__name__}: {exc}")
    if isinstance(exc, APIError):
        status = exc.status_code
        code, message = _error_body(exc)
        if status == 401 or (status == 403 and _refuses_credentials(code, message)):
            return BrokerageAuthError(f"brokerage refused the credentials ({status}): {message}")
        if status == 403:
            # A business refusal (insufficient buying power, a potential wash trade...): the
            # order is REJECTED with Alpaca's reason, not an outage of the credentials.
            return BrokerageRejected(message or f"HTTP 403 (code {code})", status_code=status)
        if status is None or status == 429 or status >= 500:
            return BrokerageUnavailable(f"brokerage unavailable ({status}): {message}")
        if status == 422 and "client_order_id" in message and "unique" in message:
            return DuplicateClientOrderId(message, status_code=status)
        return BrokerageRejected(message or f"HTTP {status} (code {code})", status_code=status)
    if isinstance(exc, ValidationError | TypeError | ValueError | KeyError | ArithmeticError):
        return BrokerageProtocolError(f"brokerage answered something unreadable: {exc}")
    if isinstance(exc, requests.exceptions.RequestException):
        return BrokerageProtocolError(f"brokerage request failed: {type(exc).__name__}: {exc}")
    return exc


def _dec(value: object) -> Decimal:
    return Decimal(str(value))


def _model(model: type[M], raw: object) -> M:
    """alpaca-py returns a model or, for raw calls, a dict; anything else is unreadable."""
    if isinstance(raw, model):
        return raw
    if isinstance(raw, dict):
        return model(**raw)
    raise TypeError(f"expected a {model.__name__} object, got {type(raw).__name__}")


def _models(model: type[M], raw: object) -> list[M]:
    if not isinstance(raw, list):
        raise TypeError(f"expected a list of {model.__name__}, got {type(raw).__name__}")
    return [_model(model, item) for item in raw]


def _opt_dec(value: object) -> Decimal | None:
    return None if value in (None, "") else _dec(value)


def _enum_value(value: object, default: str) -> str:
    raw = getattr(value, "value", value)
    return str(raw).lower() if raw else default


def to_broker_order(order: Order) -> BrokerOrder:
    """alpaca-py's Order as ours, legs included. Order types Arbiter does not know (placed
    outside it) are reported by whether they carry a limit price."""
    if order.symbol is None or order.side is None or order.qty is None:
        raise BrokerageProtocolError(f"order {order.id} lacks symbol, side or qty")
    kind = order.type.value if order.type is not None else "market"
    limit_price = _opt_dec(order.limit_price)
    if kind not in set(OrderType):
        kind = OrderType.LIMIT if limit_price is not None else OrderType.MARKET
    tif = _enum_value(order.time_in_force, "day")
    order_class = _enum_value(order.order_class, "simple")
    avg = order.filled_avg_price
    return BrokerOrder(
        brokerage_order_id=str(order.id),
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=Side(order.side.value),
        quantity=_dec(order.qty),
        status=order.status.value.lower(),
        filled_quantity=_dec(order.filled_qty or 0),
        avg_fill_price=None if avg in (None, "") else _dec(avg),
        order_type=OrderType(kind),
        limit_price=limit_price,
        submitted_at=order.submitted_at,
        updated_at=order.updated_at,
        stop_price=_opt_dec(order.stop_price),
        trail_price=_opt_dec(order.trail_price),
        trail_percent=_opt_dec(order.trail_percent),
        time_in_force=TimeInForce(tif)
        if tif in TimeInForce.__members__.values()
        else TimeInForce.DAY,
        order_class=(
            OrderClass(order_class)
            if order_class in set(OrderClass)
            else OrderClass.SIMPLE
        ),
        legs=tuple(to_broker_order(leg) for leg in order.legs or ()),
        replaced_by=None if order.replaced_by is None else str(order.replaced_by),
        replaces=None if order.replaces is None else str(order.replaces),
    )


def order_body(request: OrderRequest) -> dict[str, Any]:
    """POST /v2/orders as Alpaca's v2 API defines it, every amount a decimal string."""
    body: dict[str, Any] = {
        "symbol": request.symbol,
        "qty": str(request.quantity),
        "side": request.side.value,
        "type": request.order_type.value,
        "time_in_force": request.time_in_force.value,
        "client_order_id": request.client_order_id,
    }
    for name in ("limit_price", "stop_price", "trail_price", "trail_percent"):
        value = getattr(request, name)
        if value is not None:
            body[name] = str(value)
    if request.order_class is not OrderClass.SIMPLE:
        body["order_class"] = request.order_class.value
    if request.take_profit is not None:
        body["take_profit"] = {"limit_price": str(request.take_profit.limit_price)}
    if request.stop_loss is not None:
        body["stop_loss"] = {"stop_price": str(request.stop_loss.stop_price)}
        if request.stop_loss.limit_price is not None:
            body["stop_loss"]["limit_price"] = str(request.stop_loss.limit_price)
    return body


def order_report(raw: object) -> BrokerOrder:
    """An order as Alpaca sends it (a dict of decimal strings, e.g. a trade update's `order`)
    as ours; anything unreadable raises BrokerageProtocolError."""
    try:
        return to_broker_order(_model(Order, raw))
    except Exception as exc:
        translated = translate(exc)
        if translated is exc:
            raise
        raise translated from exc


class AlpacaBrokerage:
    """core.brokerage.Brokerage over alpaca-py's TradingClient. `calls` counts HTTP requests."""

    def __init__(
        self,
        url: str,
        api_key: str,
        secret_key: str,
        *,
        timeout_s: float = 5.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.page_size = page_size
        self.calls = 0
        self.client = one_attempt(TradingClient(api_key, secret_key, url_override=self.url),
                                  self.url, timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlpacaBrokerage:
        return cls(
            settings.brokerage_url,
            settings.brokerage_key,
            settings.brokerage_secret,
            timeout_s=settings.brokerage_timeout_s,
        )

    def _call(self, fn: Callable[[], T]) -> T:
        self.calls += 1
        try:
            return fn()
        except Exception as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    # --- orders -----------------------------------------------------------------------------

    def submit(self, request: OrderRequest) -> BrokerOrder:
        # Posted as a dict rather than alpaca-py's OrderRequest, whose qty is a float: Alpaca
        # accepts decimal strings, and money stays exact.
        body = order_body(request)
        return self._call(lambda: to_broker_order(_model(Order, self.client.post("/orders", body))))

    def replace(self, brokerage_order_id: str, request: ReplaceRequest) -> BrokerOrder:
        """PATCH /v2/orders/{id}. Sent as a dict for the reason `submit` is: alpaca-py's
        ReplaceOrderRequest holds qty as an int and prices as floats."""
        body: dict[str, Any] = {"client_order_id": request.client_order_id}
        for name, value in (
            ("qty", request.quantity),
            ("limit_price", request.limit_price),
            ("stop_price", request.stop_price),
            ("trail", request.trail),
        ):
            if value is not None:
                body[name] = str(value)
        return self._call(
            lambda: to_broker_order(
                _model(Order, self.client.patch(f"/orders/{brokerage_order_id}", body))
            )
        )

    def get(self, brokerage_order_id: str) -> BrokerOrder:
        """One order by the brokerage's id, a bracket's or OCO's legs nested in it."""
        path, nested = f"/orders/{brokerage_order_id}", {"nested": "true"}
        return self._call(lambda: to_broker_order(_model(Order, self.client.get(path, nested))))

    def get_by_client_order_id(self, client_order_id: str) -> BrokerOrder | None:
        try:
            return self._call(
                lambda: to_broker_order(
                    _model(Order, self.client.get_order_by_client_id(client_order_id))
                )
            )
        except BrokerageRejected as exc:
            if exc.status_code == 404:
                return None
            raise

    def list_open_orders(self) -> list[BrokerOrder]:
        return self._page_orders(QueryOrderStatus.OPEN, since=None)

    def list_orders_since(self, since: datetime) -> list[BrokerOrder]:
        return self._page_orders(QueryOrderStatus.ALL, since=since - _TICK)

    def _page_orders(self, status: QueryOrderStatus, since: datetime | None) -> list[BrokerOrder]:
        """Oldest first, `page_size` at a time, each page starting just before the newest
        submitted_at of the last (so orders sharing a timestamp are not skipped; duplicates
        are dropped by id)."""
        seen: dict[str, BrokerOrder] = {}
        after = since
        while True:
            query = GetOrdersRequest(
                status=status, limit=self.page_size, direction=Sort.ASC, after=after, nested=False
            )
            orders = self._call(partial(self._orders_page, query))
            fresh = [o for o in orders if o.brokerage_order_id not in seen]
            seen.update((o.brokerage_order_id, o) for o in fresh)
            if len(orders) < self.page_size:
                break
            newest = max(o.submitted_at for o in orders if o.submitted_at is not None)
            # A full page of one timestamp brings nothing new: step past it rather than stop.
            step = newest - _TICK if fresh else newest
            if after is not None and step <= after:
                break
            after = step
        return list(seen.values())

    def _orders_page(self, query: GetOrdersRequest) -> list[BrokerOrder]:
        return [to_broker_order(o) for o in _models(Order, self.client.get_orders(filter=query))]

    def cancel(self, brokerage_order_id: str) -> None:
        self._call(lambda: self.client.cancel_order_by_id(brokerage_order_id))

    # --- positions, account, fills ----------------------------------------------------------

    def list_positions(self) -> list[BrokerPosition]:
        return self._call(self._positions)

    def _positions(self) -> list[BrokerPosition]:
        result = []
        for p in _models(Position, self.client.get_all_positions()):
            qty = _dec(p.qty)
            # Alpaca signs short quantities; be tolerant of a server that does not.
            if p.side.value == "short" and qty > 0:
                qty = -qty
            result.append(BrokerPosition(p.symbol, qty, _dec(p.avg_entry_price)))
        return result

    def account(self) -> BrokerAccount:
        return self._call(self._account)

    def _account(self) -> BrokerAccount:
        acct = _model(TradeAccount, self.client.get_account())
        return BrokerAccount(
            account_id=str(acct.id),
            status=acct.status.value,
            cash=_dec(acct.cash or 0),
            buying_power=_dec(acct.buying_power or 0),
            equity=_dec(acct.equity or 0),
        )


__all__ = ["AlpacaBrokerage", "order_report", "to_broker_order", "translate"]
