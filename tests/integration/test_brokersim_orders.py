"""The simulator's order types, order classes and replace, driven through alpaca-py's own
TradingClient over real HTTP against a real simulator process, prices steered by the admin API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)

from tests.fixtures.simulator import Simulator, wait_for

BUY, SELL = OrderSide.BUY, OrderSide.SELL
GTC, DAY = TimeInForce.GTC, TimeInForce.DAY


def symbol() -> str:
    """A fresh symbol per test, so tests can share one simulator."""
    return "Z" + uuid.uuid4().hex[:6].upper()


@pytest.fixture
def client(shared_simulator: Simulator) -> TradingClient:
    return TradingClient(
        shared_simulator.key, shared_simulator.secret, url_override=shared_simulator.url
    )


@pytest.fixture
def price(shared_simulator: Simulator) -> Callable[[str, Any], None]:
    return shared_simulator.admin.set_price


def status_of(client: TradingClient, order: Order) -> OrderStatus:
    return client.get_order_by_id(order.id).status


def reaches(client: TradingClient, order: Order, status: OrderStatus) -> Order:
    return wait_for(lambda: (o := client.get_order_by_id(order.id)).status == status and o)


def nested(client: TradingClient, order: Order) -> Order:
    return client.get_order_by_id(order.id, GetOrderByIdRequest(nested=True))


def held(
    client: TradingClient, sym: str, qty: int, at: str, price: Callable[[str, Any], None]
) -> None:
    price(sym, at)
    client.submit_order(MarketOrderRequest(symbol=sym, qty=qty, side=BUY, time_in_force=DAY))


def position(client: TradingClient, sym: str) -> Decimal:
    return next((Decimal(p.qty) for p in client.get_all_positions() if p.symbol == sym), Decimal(0))


# --- order types ------------------------------------------------------------------------------


def test_sell_stop_fills_only_once_the_price_falls_to_it(client: TradingClient, price: Any) -> None:
    sym = symbol()
    held(client, sym, 10, "100", price)
    stop = client.submit_order(
        StopOrderRequest(symbol=sym, qty=10, side=SELL, time_in_force=GTC, stop_price=95)
    )
    assert (stop.type.value, stop.stop_price, stop.status) == ("stop", "95", OrderStatus.NEW)
    price(sym, "95.5")
    assert status_of(client, stop) == OrderStatus.NEW
    price(sym, "94.5")
    filled = reaches(client, stop, OrderStatus.FILLED)
    assert Decimal(str(filled.filled_avg_price)) == Decimal("94.5")
    assert position(client, sym) == 0


def test_buy_stop_limit_is_elected_at_its_stop_and_fills_only_inside_its_limit(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    price(sym, "104")
    order = client.submit_order(
        StopLimitOrderRequest(
            symbol=sym, qty=3, side=BUY, time_in_force=GTC, stop_price=105, limit_price=106
        )
    )
    price(sym, "107")  # elected (>= 105) but above the limit
    wait_for(lambda: client.get_order_by_id(order.id).status == OrderStatus.NEW)
    price(sym, "105.5")
    filled = reaches(client, order, OrderStatus.FILLED)
    assert Decimal(str(filled.filled_avg_price)) == Decimal("105.5")


def test_trailing_stop_sell_tracks_the_high_water_mark_and_fires_on_the_pullback(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    held(client, sym, 5, "100", price)
    trailing = client.submit_order(
        TrailingStopOrderRequest(symbol=sym, qty=5, side=SELL, time_in_force=GTC, trail_price=2)
    )
    assert (trailing.hwm, trailing.stop_price, trailing.trail_price) == ("100", "98", "2")
    price(sym, "105")
    moved = wait_for(lambda: (o := client.get_order_by_id(trailing.id)).hwm == "105" and o)
    assert moved.stop_price == "103" and moved.status == OrderStatus.NEW
    price(sym, "104")  # below the mark, above the stop: the stop stays where it was
    assert client.get_order_by_id(trailing.id).stop_price == "103"
    price(sym, "102.9")
    filled = reaches(client, trailing, OrderStatus.FILLED)
    assert (Decimal(str(filled.filled_avg_price)), filled.hwm) == (Decimal("102.9"), "105")


def test_trailing_stop_buy_by_percent_tracks_the_low_water_mark(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    price(sym, "100")
    trailing = client.submit_order(
        TrailingStopOrderRequest(symbol=sym, qty=1, side=BUY, time_in_force=GTC, trail_percent=5)
    )
    assert (trailing.hwm, trailing.stop_price, trailing.trail_percent) == ("100", "105", "5")
    price(sym, "90")
    wait_for(lambda: client.get_order_by_id(trailing.id).stop_price == "94.5")
    price(sym, "94.6")
    assert Decimal(str(reaches(client, trailing, OrderStatus.FILLED).filled_avg_price)) == Decimal(
        "94.6"
    )


@pytest.mark.parametrize(
    "tif, limit, status",
    [
        (TimeInForce.IOC, "90", OrderStatus.CANCELED),  # cannot execute now: cancelled
        (TimeInForce.IOC, "110", OrderStatus.FILLED),
        (TimeInForce.FOK, "90", OrderStatus.CANCELED),
        (TimeInForce.FOK, "110", OrderStatus.FILLED),
        (TimeInForce.OPG, "110", OrderStatus.FILLED),  # worked as a day order
        (TimeInForce.CLS, "110", OrderStatus.FILLED),
    ],
)
def test_immediate_and_auction_time_in_force(
    client: TradingClient, price: Any, tif: TimeInForce, limit: str, status: OrderStatus
) -> None:
    sym = symbol()
    price(sym, "100")
    order = client.submit_order(
        LimitOrderRequest(symbol=sym, qty=4, side=BUY, time_in_force=tif, limit_price=float(limit))
    )
    done = reaches(client, order, status)
    assert done.filled_qty == ("4" if status == OrderStatus.FILLED else "0")


def test_ioc_fills_what_it_can_now_even_in_slices(
    simulator_factory: Callable[..., Simulator],
) -> None:
    sim = simulator_factory(partial_slices=4)
    client = TradingClient(sim.key, sim.secret, url_override=sim.url)
    order = client.submit_order(
        MarketOrderRequest(symbol="IOCX", qty=8, side=BUY, time_in_force=TimeInForce.IOC)
    )
    assert (order.status, order.filled_qty) == (OrderStatus.FILLED, "8")


# --- order classes ----------------------------------------------------------------------------


def test_bracket_legs_wait_for_the_entry_then_one_cancels_the_other(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    price(sym, "101")
    entry = client.submit_order(
        LimitOrderRequest(
            symbol=sym,
            qty=10,
            side=BUY,
            time_in_force=GTC,
            limit_price=100,
            order_class=OrderClass.BRACKET,
            take_profit=TakeProfitRequest(limit_price=110),
            stop_loss=StopLossRequest(stop_price=95),
        )
    )
    assert entry.order_class == OrderClass.BRACKET and entry.status == OrderStatus.NEW
    take_profit, stop_loss = entry.legs or []
    assert (take_profit.type.value, take_profit.side, take_profit.limit_price) == (
        "limit",
        SELL,
        "110",
    )
    assert (stop_loss.type.value, stop_loss.side, stop_loss.stop_price) == ("stop", SELL, "95")
    assert {take_profit.status, stop_loss.status} == {OrderStatus.HELD}
    assert len({entry.client_order_id, take_profit.client_order_id, stop_loss.client_order_id}) == 3
    assert client.get_order_by_client_id(stop_loss.client_order_id).id == stop_loss.id

    price(sym, "99.5")
    reaches(client, entry, OrderStatus.FILLED)
    assert reaches(client, take_profit, OrderStatus.NEW).status == OrderStatus.NEW
    assert status_of(client, stop_loss) == OrderStatus.NEW
    assert position(client, sym) == 10

    price(sym, "110.5")
    reaches(client, take_profit, OrderStatus.FILLED)
    assert reaches(client, stop_loss, OrderStatus.CANCELED).canceled_at is not None
    assert position(client, sym) == 0
    legs = nested(client, entry).legs or []
    assert [leg.status for leg in legs] == [OrderStatus.FILLED, OrderStatus.CANCELED]


def test_bracket_stop_limit_leg_fires_and_cancels_the_take_profit(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    price(sym, "100")
    entry = client.submit_order(
        MarketOrderRequest(
            symbol=sym,
            qty=4,
            side=BUY,
            time_in_force=DAY,
            order_class=OrderClass.BRACKET,
            take_profit=TakeProfitRequest(limit_price=120),
            stop_loss=StopLossRequest(stop_price=95, limit_price=94),
        )
    )
    assert entry.status == OrderStatus.FILLED
    take_profit, stop_loss = entry.legs or []
    assert stop_loss.type.value == "stop_limit" and stop_loss.status == OrderStatus.NEW
    price(sym, "94.5")
    filled = reaches(client, stop_loss, OrderStatus.FILLED)
    assert Decimal(str(filled.filled_avg_price)) == Decimal("94.5")
    reaches(client, take_profit, OrderStatus.CANCELED)


def test_cancelling_a_bracket_entry_cancels_its_held_legs(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    price(sym, "50")
    entry = client.submit_order(
        LimitOrderRequest(
            symbol=sym,
            qty=1,
            side=BUY,
            time_in_force=GTC,
            limit_price=40,
            order_class=OrderClass.BRACKET,
            take_profit=TakeProfitRequest(limit_price=45),
            stop_loss=StopLossRequest(stop_price=35),
        )
    )
    client.cancel_order_by_id(entry.id)
    assert [leg.status for leg in nested(client, entry).legs or []] == [OrderStatus.CANCELED] * 2


@pytest.mark.parametrize(
    "take_profit, stop_price, message",
    [
        (100, 90, "take_profit.limit_price must be >= base_price + 0.01"),
        (110, 100, "stop_loss.stop_price must be <= base_price - 0.01"),
    ],
)
def test_bracket_legs_on_the_wrong_side_of_the_base_price_are_refused(
    client: TradingClient, price: Any, take_profit: float, stop_price: float, message: str
) -> None:
    sym = symbol()
    price(sym, "100")
    with pytest.raises(APIError) as refused:
        client.submit_order(
            MarketOrderRequest(
                symbol=sym,
                qty=1,
                side=BUY,
                time_in_force=DAY,
                order_class=OrderClass.BRACKET,
                take_profit=TakeProfitRequest(limit_price=take_profit),
                stop_loss=StopLossRequest(stop_price=stop_price),
            )
        )
    assert refused.value.status_code == 422
    assert (refused.value.code, refused.value.message) == (42210000, message)
    assert client.get_orders(GetOrdersRequest(symbols=[sym], status=QueryOrderStatus.ALL)) == []


def test_oco_exit_pair_one_fill_cancels_the_other(client: TradingClient, price: Any) -> None:
    sym = symbol()
    held(client, sym, 6, "100", price)
    oco = client.submit_order(
        LimitOrderRequest(
            symbol=sym,
            qty=6,
            side=SELL,
            time_in_force=GTC,
            order_class=OrderClass.OCO,
            take_profit=TakeProfitRequest(limit_price=110),
            stop_loss=StopLossRequest(stop_price=95),
        )
    )
    assert (oco.type.value, oco.limit_price, oco.status) == ("limit", "110", OrderStatus.NEW)
    [stop_leg] = oco.legs or []
    assert (stop_leg.type.value, stop_leg.side, stop_leg.status) == ("stop", SELL, OrderStatus.NEW)
    price(sym, "94")
    reaches(client, stop_leg, OrderStatus.FILLED)
    reaches(client, oco, OrderStatus.CANCELED)
    assert position(client, sym) == 0


def test_oto_leg_goes_live_with_the_entry_and_nested_listing_rolls_legs_up(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    price(sym, "20")
    entry = client.submit_order(
        MarketOrderRequest(
            symbol=sym,
            qty=2,
            side=BUY,
            time_in_force=GTC,
            order_class=OrderClass.OTO,
            stop_loss=StopLossRequest(stop_price=18),
        )
    )
    [leg] = entry.legs or []
    assert (leg.status, leg.order_class, leg.type.value) == (
        OrderStatus.NEW,
        OrderClass.OTO,
        "stop",
    )
    flat = client.get_orders(GetOrdersRequest(symbols=[sym], status=QueryOrderStatus.ALL))
    assert {o.id for o in flat} == {entry.id, leg.id} and all(o.legs is None for o in flat)
    [rolled] = client.get_orders(
        GetOrdersRequest(symbols=[sym], status=QueryOrderStatus.ALL, nested=True)
    )
    assert rolled.id == entry.id and [o.id for o in rolled.legs or []] == [leg.id]
    [open_order] = client.get_orders(GetOrdersRequest(symbols=[sym]))
    assert open_order.id == leg.id


# --- replace ----------------------------------------------------------------------------------


def test_replace_makes_a_new_linked_order_and_the_old_one_replaced(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    price(sym, "100")
    old = client.submit_order(
        LimitOrderRequest(symbol=sym, qty=5, side=BUY, time_in_force=DAY, limit_price=90)
    )
    new_cid = f"replacement-{uuid.uuid4()}"
    new = client.replace_order_by_id(
        old.id, ReplaceOrderRequest(qty=6, limit_price=95, client_order_id=new_cid)
    )
    assert (new.replaces, new.client_order_id, new.qty, new.limit_price) == (
        old.id,
        new_cid,
        "6",
        "95",
    )
    assert new.status == OrderStatus.NEW and new.id != old.id
    replaced = client.get_order_by_id(old.id)
    assert (replaced.status, replaced.replaced_by) == (OrderStatus.REPLACED, new.id)
    assert replaced.replaced_at is not None
    price(sym, "94")
    assert reaches(client, new, OrderStatus.FILLED).filled_qty == "6"
    assert position(client, sym) == 6

    with pytest.raises(APIError) as not_open:
        client.replace_order_by_id(new.id, ReplaceOrderRequest(limit_price=96))
    assert (not_open.value.status_code, not_open.value.message) == (
        422,
        "unable to replace order, order is not open",
    )
    with pytest.raises(APIError) as again:
        client.replace_order_by_id(old.id, ReplaceOrderRequest(limit_price=96))
    assert again.value.status_code == 422


def test_replace_refuses_a_duplicate_client_order_id_and_fields_the_type_lacks(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    price(sym, "100")
    first = client.submit_order(
        LimitOrderRequest(symbol=sym, qty=1, side=BUY, time_in_force=GTC, limit_price=50)
    )
    other = client.submit_order(
        LimitOrderRequest(symbol=sym, qty=1, side=BUY, time_in_force=GTC, limit_price=51)
    )
    with pytest.raises(APIError) as duplicate:
        client.replace_order_by_id(
            first.id, ReplaceOrderRequest(limit_price=52, client_order_id=other.client_order_id)
        )
    assert duplicate.value.message == "client_order_id must be unique"
    assert status_of(client, first) == OrderStatus.NEW  # nothing changed
    with pytest.raises(APIError) as no_stop:
        client.replace_order_by_id(first.id, ReplaceOrderRequest(stop_price=40))
    assert no_stop.value.status_code == 422
    with pytest.raises(APIError) as unchanged:
        client.replace_order_by_id(first.id, ReplaceOrderRequest(limit_price=50))
    assert (unchanged.value.status_code, unchanged.value.code) == (403, 40310000)


def test_replacing_a_trailing_stop_keeps_its_mark_and_moves_its_trail(
    client: TradingClient, price: Any
) -> None:
    sym = symbol()
    held(client, sym, 3, "100", price)
    trailing = client.submit_order(
        TrailingStopOrderRequest(symbol=sym, qty=3, side=SELL, time_in_force=GTC, trail_price=5)
    )
    price(sym, "110")
    wait_for(lambda: client.get_order_by_id(trailing.id).hwm == "110")
    new = client.replace_order_by_id(trailing.id, ReplaceOrderRequest(trail=1))
    assert (new.trail_price, new.hwm, new.stop_price) == ("1", "110", "109")


def test_replacing_a_bracket_entry_carries_its_legs(client: TradingClient, price: Any) -> None:
    sym = symbol()
    price(sym, "100")
    entry = client.submit_order(
        LimitOrderRequest(
            symbol=sym,
            qty=2,
            side=BUY,
            time_in_force=GTC,
            limit_price=90,
            order_class=OrderClass.BRACKET,
            take_profit=TakeProfitRequest(limit_price=120),
            stop_loss=StopLossRequest(stop_price=80),
        )
    )
    new = client.replace_order_by_id(entry.id, ReplaceOrderRequest(limit_price=99))
    assert [leg.id for leg in new.legs or []] == [leg.id for leg in entry.legs or []]
    price(sym, "98")
    reaches(client, new, OrderStatus.FILLED)
    assert {leg.status for leg in nested(client, new).legs or []} == {OrderStatus.NEW}


# --- durability and refusals ------------------------------------------------------------------


def test_legs_marks_and_replacements_survive_a_sigkill(simulator: Simulator) -> None:
    client = TradingClient(simulator.key, simulator.secret, url_override=simulator.url)
    simulator.admin.set_price("DURA", "100")
    entry = client.submit_order(
        LimitOrderRequest(
            symbol="DURA",
            qty=2,
            side=BUY,
            time_in_force=GTC,
            limit_price=90,
            order_class=OrderClass.BRACKET,
            take_profit=TakeProfitRequest(limit_price=130),
            stop_loss=StopLossRequest(stop_price=85),
        )
    )
    trailing = client.submit_order(
        TrailingStopOrderRequest(symbol="DURA", qty=1, side=BUY, time_in_force=GTC, trail_price=3)
    )
    old = client.submit_order(
        LimitOrderRequest(symbol="DURA", qty=1, side=BUY, time_in_force=GTC, limit_price=10)
    )
    new = client.replace_order_by_id(old.id, ReplaceOrderRequest(limit_price=11))
    simulator.admin.set_price("DURA", "95")
    wait_for(lambda: client.get_order_by_id(trailing.id).hwm == "95")
    simulator.restart(kill=True)
    simulator.admin.set_price("DURA", "95")
    assert [leg.status for leg in nested(client, entry).legs or []] == [OrderStatus.HELD] * 2
    assert client.get_order_by_id(trailing.id).stop_price == "98"
    assert client.get_order_by_id(old.id).replaced_by == new.id
    with pytest.raises(APIError):
        client.replace_order_by_id(
            new.id, ReplaceOrderRequest(client_order_id=entry.legs[0].client_order_id)
        )  # type: ignore[index]
    simulator.admin.set_price("DURA", "89")
    reaches(client, entry, OrderStatus.FILLED)
    assert {leg.status for leg in nested(client, entry).legs or []} == {OrderStatus.NEW}


BASE = {"symbol": "BADX", "qty": "1", "side": "buy", "time_in_force": "gtc"}


@pytest.mark.parametrize(
    "body",
    [
        {**BASE, "type": "stop"},
        {**BASE, "type": "stop_limit", "stop_price": "10"},
        {**BASE, "type": "trailing_stop"},
        {**BASE, "type": "trailing_stop", "trail_price": "1", "trail_percent": "1"},
        {**BASE, "type": "trailing_stop", "trail_percent": "100"},
        {**BASE, "type": "market", "stop_price": "10"},
        {**BASE, "type": "stop", "stop_price": "10", "time_in_force": "ioc"},
        {**BASE, "type": "market", "order_class": "bracket", "take_profit": {"limit_price": "9"}},
        {
            **BASE,
            "type": "market",
            "order_class": "oco",
            "take_profit": {"limit_price": "9"},
            "stop_loss": {"stop_price": "5"},
        },
        {**BASE, "type": "market", "order_class": "oto"},
        {
            **BASE,
            "type": "market",
            "order_class": "bracket",
            "time_in_force": "ioc",
            "take_profit": {"limit_price": "900"},
            "stop_loss": {"stop_price": "1"},
        },
        {
            **BASE,
            "type": "market",
            "order_class": "oto",
            "stop_loss": {"stop_price": "1", "trail_percent": "2"},
        },
        {**BASE, "type": "market", "take_profit": {"limit_price": "900"}},
        {**BASE, "type": "market", "order_class": "mleg"},
        {
            **BASE,
            "type": "market",
            "order_class": "bracket",
            "take_profit": "900",
            "stop_loss": {"stop_price": "1"},
        },
    ],
)
def test_orders_the_simulator_cannot_take_get_a_422_with_a_reason(
    shared_simulator: Simulator, body: dict[str, Any]
) -> None:
    before = len(shared_simulator.admin.orders())
    response = shared_simulator.admin.http.post("/v2/orders", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert isinstance(error["code"], int) and error["message"]
    assert len(shared_simulator.admin.orders()) == before
