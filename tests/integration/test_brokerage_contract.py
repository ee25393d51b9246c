"""The brokerage contract, end to end: AlpacaBrokerage (alpaca-py) over real HTTP against a
real simulator process. No mocks; faults are injected through the simulator's admin API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from adapters.alpaca import AlpacaBrokerage
from core.brokerage import BrokerOrder, OrderRequest, OrderType, Side
from core.brokerage import TimeInForce as Tif
from core.errors import (
    BrokerageAuthError,
    BrokerageProtocolError,
    BrokerageRejected,
    BrokerageUnavailable,
    DuplicateClientOrderId,
)
from core.states import OrderState
from tests.fixtures.simulator import Simulator, wait_for

Factory = Callable[..., Simulator]


def cid() -> str:
    return f"test-{uuid.uuid4()}"


def market(symbol: str = "AAPL", qty: str = "10", side: Side = Side.BUY) -> OrderRequest:
    return OrderRequest(client_order_id=cid(), symbol=symbol, side=side, quantity=Decimal(qty))


def limit(symbol: str, qty: str, side: Side, price: str, tif: Tif = Tif.GTC) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid(),
        symbol=symbol,
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.LIMIT,
        limit_price=Decimal(price),
        time_in_force=tif,
    )


def position(brokerage: AlpacaBrokerage, symbol: str) -> tuple[Decimal, Decimal] | None:
    for p in brokerage.list_positions():
        if p.symbol == symbol:
            return p.quantity, p.avg_entry_price
    return None


def current(brokerage: AlpacaBrokerage, order: BrokerOrder) -> BrokerOrder:
    """The brokerage's latest word on `order`, looked up as Arbiter does: by client_order_id."""
    found = brokerage.get_by_client_order_id(order.client_order_id)
    assert found is not None, order.client_order_id
    return found


def test_market_order_fills_and_reads_back_by_client_order_id(
    shared_brokerage: AlpacaBrokerage,
) -> None:
    brokerage = shared_brokerage
    request = market("AAPL", "10")
    order = brokerage.submit(request)
    assert order.client_order_id == request.client_order_id
    assert (order.status, order.state) == ("filled", OrderState.FULLY_FILLED)
    assert order.filled_quantity == Decimal(10) and order.avg_fill_price is not None
    assert brokerage.get_by_client_order_id(request.client_order_id) == order
    assert brokerage.get_by_client_order_id("no-such-order") is None


def test_open_orders_are_listed_and_cancelled(
    simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.set_price("MSFT", "300")
    resting = brokerage.submit(limit("MSFT", "5", Side.BUY, "250"))
    assert (resting.status, resting.state) == ("new", OrderState.ORDER_SENT)
    assert [o.brokerage_order_id for o in brokerage.list_open_orders()] == [
        resting.brokerage_order_id
    ]
    brokerage.cancel(resting.brokerage_order_id)
    cancelled = current(brokerage, resting)
    assert (cancelled.status, cancelled.state) == ("canceled", OrderState.CANCELLED)
    assert brokerage.list_open_orders() == []
    with pytest.raises(BrokerageRejected) as not_cancelable:
        brokerage.cancel(resting.brokerage_order_id)
    assert not_cancelable.value.status_code == 422


def test_positions_and_account_follow_fills_long_and_short(
    simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.set_price("AAPL", "100")
    simulator.admin.set_price("TSLA", "200")
    brokerage.submit(market("AAPL", "10"))
    simulator.admin.set_price("AAPL", "110")
    brokerage.submit(market("AAPL", "10"))
    brokerage.submit(market("AAPL", "5", Side.SELL))
    brokerage.submit(market("TSLA", "2.5", Side.SELL))
    assert position(brokerage, "AAPL") == (Decimal(15), Decimal(105))
    assert position(brokerage, "TSLA") == (Decimal("-2.5"), Decimal(200))
    account = brokerage.account()
    assert account.status == "ACTIVE"
    # 1,000,000 - 1000 - 1100 + 550 + 500 = 998,950 cash; equity marks 15 AAPL at 110, -2.5 TSLA.
    assert account.cash == Decimal("998950")
    assert account.equity == Decimal("998950") + 15 * 110 - Decimal("2.5") * 200


def test_duplicate_client_order_id_is_refused_and_the_original_can_be_looked_up(
    shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage
) -> None:
    simulator, brokerage = shared_simulator, shared_brokerage
    request = market("AAPL", "3")
    first = brokerage.submit(request)
    with pytest.raises(DuplicateClientOrderId) as duplicate:
        brokerage.submit(request)
    assert duplicate.value.status_code == 422
    assert brokerage.get_by_client_order_id(request.client_order_id) == first
    assert len(simulator.admin.orders(request.client_order_id)) == 1
    raw = simulator.admin.http.post(
        "/v2/orders",
        json={
            "symbol": "AAPL",
            "qty": "1",
            "side": "buy",
            "type": "market",
            "time_in_force": "day",
            "client_order_id": request.client_order_id,
        },
    )
    assert raw.status_code == 422
    assert raw.json() == {"code": 40010001, "message": "client_order_id must be unique"}


def test_partial_fills_arrive_in_slices_summing_to_quantity_at_the_average_price(
    simulator_factory: Factory,
) -> None:
    sim = simulator_factory(partial_slices=4, fill_latency_ms=20)
    brokerage = sim.brokerage()
    order = brokerage.submit(market("NVDA", "10"))
    assert order.status == "new"
    done = wait_for(lambda: (o := current(brokerage, order)).status == "filled" and o)
    fills = [(Decimal(f["qty"]), Decimal(f["price"]), f["id"])
             for f in sim.admin.fills(order.brokerage_order_id)]
    assert len(fills) == 4
    assert sum(quantity for quantity, _, _ in fills) == Decimal(10)
    assert len({fill_id for _, _, fill_id in fills}) == 4
    vwap = sum(quantity * price for quantity, price, _ in fills) / Decimal(10)
    assert done.avg_fill_price == vwap.quantize(Decimal("0.000001")).normalize()
    kinds = [
        a["type"]
        for a in sim.admin.http.get(
            "/v2/account/activities/FILL", params={"direction": "asc"}
        ).json()
    ]
    assert kinds == ["partial_fill", "partial_fill", "partial_fill", "fill"]


def test_zero_latency_fills_every_slice_inside_the_submit(simulator_factory: Factory) -> None:
    sim = simulator_factory(partial_slices=3)
    order = sim.brokerage().submit(market("AMD", "1.5"))
    assert order.status == "filled"
    assert [Decimal(f["qty"]) for f in sim.admin.fills(order.brokerage_order_id)] == [
        Decimal("0.5")
    ] * 3


def test_orders_fills_and_positions_survive_sigkill_and_restart(
    simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    filled = brokerage.submit(market("AAPL", "7"))
    simulator.admin.set_price("META", "500")
    resting = brokerage.submit(limit("META", "2", Side.BUY, "400"))
    positions = brokerage.list_positions()
    fills = simulator.admin.fills()
    simulator.restart(kill=True)
    assert current(brokerage, filled) == filled
    assert brokerage.get_by_client_order_id(resting.client_order_id) == resting
    assert [o.brokerage_order_id for o in brokerage.list_open_orders()] == [
        resting.brokerage_order_id
    ]
    assert brokerage.list_positions() == positions
    assert simulator.admin.fills() == fills
    with pytest.raises(DuplicateClientOrderId):
        brokerage.submit(replace(market("AAPL", "7"), client_order_id=filled.client_order_id))


def test_accept_then_timeout_raises_unavailable_and_a_lookup_finds_the_one_order(
    simulator: Simulator,
) -> None:
    brokerage = simulator.brokerage(timeout_s=0.5)
    simulator.admin.set_faults(accept_then_timeout_count=1, hang_ms=5000)
    request = market("AAPL", "4")
    with pytest.raises(BrokerageUnavailable):
        brokerage.submit(request)
    found = brokerage.get_by_client_order_id(request.client_order_id)
    assert found is not None and found.quantity == Decimal(4)
    assert len(simulator.admin.orders(request.client_order_id)) == 1


def test_error_rate_one_makes_every_call_unavailable(
    simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.set_faults(error_rate=1.0)
    request = market()
    with pytest.raises(BrokerageUnavailable):
        brokerage.submit(request)
    with pytest.raises(BrokerageUnavailable):
        brokerage.list_open_orders()
    simulator.admin.clear_faults()
    assert simulator.admin.orders() == []  # the 503 came before anything was stored


def test_unreachable_brokerage_is_unavailable(simulator: Simulator) -> None:
    brokerage = simulator.brokerage()
    simulator.kill()
    with pytest.raises(BrokerageUnavailable):
        brokerage.account()


@pytest.mark.parametrize("key, secret", [("wrong", "wrong"), ("arbiter-dev-key", "wrong")])
def test_bad_keys_raise_auth_error(shared_simulator: Simulator, key: str, secret: str) -> None:
    simulator = shared_simulator
    with pytest.raises(BrokerageAuthError):
        simulator.brokerage(key=key, secret=secret).account()
    response = httpx.get(f"{simulator.url}/v2/account")
    assert response.status_code == 401
    assert response.json() == {"code": 40110000, "message": "request is not authorized"}


GOOD = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}


@pytest.mark.parametrize(
    "body",
    [
        {**GOOD, "qty": "-1"},
        {**GOOD, "qty": "0"},
        {**GOOD, "qty": "NaN"},
        {**GOOD, "qty": "Infinity"},
        {**GOOD, "qty": "abc"},
        {**GOOD, "qty": True},
        {**GOOD, "qty": "0.0000000001"},
        {**GOOD, "symbol": "not a symbol!"},
        {**GOOD, "symbol": 42},
        {k: v for k, v in GOOD.items() if k != "qty"},
        {k: v for k, v in GOOD.items() if k != "symbol"},
        {k: v for k, v in GOOD.items() if k != "side"},
        {**GOOD, "side": "hold"},
        {**GOOD, "type": "stop"},
        {**GOOD, "type": "limit"},
        {**GOOD, "type": "limit", "limit_price": "-5"},
        {**GOOD, "time_in_force": "forever"},
        {**GOOD, "client_order_id": "x" * 200},
        {**GOOD, "client_order_id": 7},
        ["not", "an", "object"],
        "a string",
    ],
)
def test_malformed_orders_get_alpaca_style_4xx_json(shared_simulator: Simulator, body: Any) -> None:
    before = len(shared_simulator.admin.orders())
    response = shared_simulator.admin.http.post("/v2/orders", json=body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()
    assert isinstance(error["code"], int) and isinstance(error["message"], str)
    assert len(shared_simulator.admin.orders()) == before


@pytest.mark.parametrize(
    "method, path, params, content",
    [
        ("POST", "/v2/orders", None, b"{not json"),
        ("POST", "/v2/orders", None, b"\xff\xfe"),
        ("GET", "/v2/orders", {"status": "weird"}, None),
        ("GET", "/v2/orders", {"limit": "many"}, None),
        ("GET", "/v2/orders", {"after": "yesterday"}, None),
        ("GET", "/v2/orders", {"direction": "sideways"}, None),
        ("GET", "/v2/orders/not-a-uuid", None, None),
        ("GET", "/v2/orders:by_client_order_id", None, None),
        ("DELETE", "/v2/orders/00000000-0000-0000-0000-000000000000", None, None),
        ("GET", "/v2/nothing-here", None, None),
        ("POST", "/admin/faults", None, b'{"error_rate": 7}'),
        ("POST", "/admin/faults", None, b'{"no_such_knob": 1}'),
    ],
)
def test_malformed_requests_never_get_a_500(
    shared_simulator: Simulator, method: str, path: str, params: Any, content: bytes | None
) -> None:
    http = shared_simulator.admin.http
    response = http.request(method, path, params=params, content=content)
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"code", "message"}


def test_garbage_body_raises_protocol_error(
    simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.set_faults(garbage_count=2)
    with pytest.raises(BrokerageProtocolError):
        brokerage.account()
    with pytest.raises(BrokerageProtocolError):
        brokerage.list_open_orders()
    assert brokerage.account().status == "ACTIVE"


def test_limit_orders_fill_only_when_the_price_crosses(
    shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage
) -> None:
    admin, brokerage = shared_simulator.admin, shared_brokerage
    admin.set_price("IBM", "150")
    buy = brokerage.submit(limit("IBM", "3", Side.BUY, "140"))
    sell = brokerage.submit(limit("IBM", "2", Side.SELL, "160"))
    assert (buy.status, sell.status) == ("new", "new")
    admin.set_price("IBM", "139.5")
    filled = wait_for(lambda: (o := current(brokerage, buy)).status == "filled" and o)
    assert filled.avg_fill_price == Decimal("139.5")
    assert current(brokerage, sell).status == "new"
    admin.set_price("IBM", "161")
    wait_for(lambda: current(brokerage, sell).status == "filled")
    assert position(brokerage, "IBM") == (Decimal(1), Decimal("139.5"))


def test_day_orders_expire_at_session_end_and_gtc_orders_do_not(
    shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage
) -> None:
    simulator, brokerage = shared_simulator, shared_brokerage
    simulator.admin.set_price("ORCL", "100")
    day = brokerage.submit(limit("ORCL", "1", Side.BUY, "50", tif=Tif.DAY))
    gtc = brokerage.submit(limit("ORCL", "1", Side.BUY, "50", tif=Tif.GTC))
    assert simulator.admin.session_end() >= 1
    expired = current(brokerage, day)
    assert (expired.status, expired.state) == ("expired", OrderState.CANCELLED)
    assert current(brokerage, gtc).status == "new"


def test_day_orders_expire_after_the_configured_day_length(simulator_factory: Factory) -> None:
    sim = simulator_factory(day_length_s=0.2)
    sim.admin.set_price("ORCL", "100")
    brokerage = sim.brokerage()
    day = brokerage.submit(limit("ORCL", "1", Side.BUY, "50", tif=Tif.DAY))
    wait_for(lambda: current(brokerage, day).status == "expired")


def test_reject_rate_one_rejects_every_order(simulator_factory: Factory) -> None:
    order = simulator_factory(reject_rate=1.0).brokerage().submit(market())
    assert (order.status, order.state) == ("rejected", OrderState.REJECTED)


def test_listing_pages_through_every_open_order(simulator: Simulator) -> None:
    brokerage = simulator.brokerage(page_size=7)
    simulator.admin.set_price("PAGE", "100")
    submitted = [brokerage.submit(limit("PAGE", "1", Side.BUY, "10")) for _ in range(30)]
    brokerage.submit(market("PAGE", "1"))  # filled: not open
    brokerage.calls = 0
    listed = brokerage.list_open_orders()
    assert [o.brokerage_order_id for o in listed] == [o.brokerage_order_id for o in submitted]
    assert brokerage.calls == 5  # 7 + 6 new per later page (one overlaps): 7, 13, 19, 25, 30
    since = submitted[10].submitted_at
    assert since is not None
    recent = brokerage.list_orders_since(since)
    assert len(recent) == 21  # 20 resting from index 10 on, plus the filled one
    assert brokerage.list_orders_since(datetime.now(UTC) + timedelta(minutes=1)) == []


def test_positions_changed_behind_our_back_show_up(
    simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.adjust_position("GME", qty=5, price="20")
    assert position(brokerage, "GME") == (Decimal(5), Decimal(20))
    simulator.admin.adjust_position("GME", target_qty=0)
    assert position(brokerage, "GME") is None
    # Adjustments are not order fills: Alpaca's fill activities do not list them.
    assert simulator.admin.http.get("/v2/account/activities/FILL").json() == []


def test_plain_alpaca_py_client_buys_10_aapl_and_sees_the_position(simulator: Simulator) -> None:
    client = TradingClient(simulator.key, simulator.secret, url_override=simulator.url)
    order = client.submit_order(
        MarketOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )
    filled = wait_for(
        lambda: (o := client.get_order_by_id(order.id)).status == OrderStatus.FILLED and o
    )
    assert Decimal(str(filled.filled_qty)) == 10
    [held] = client.get_all_positions()
    assert (held.symbol, Decimal(held.qty), held.side.value) == ("AAPL", Decimal(10), "long")
    assert client.get_account().status.value == "ACTIVE"
