"""The simulator's trade_updates websocket and latest trade/quote routes, through alpaca-py's
own TradingStream and StockHistoricalDataClient against a real simulator process."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockLatestQuoteRequest, StockLatestTradeRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, ReplaceOrderRequest
from alpaca.trading.stream import TradingStream
from websockets.sync.client import connect

from tests.fixtures.simulator import Simulator, wait_for

Factory = Callable[..., Simulator]


class Listener:
    """alpaca-py's TradingStream on its own thread, collecting every trade update."""

    def __init__(self, sim: Simulator, key: str | None = None) -> None:
        self.updates: list[TradeUpdate] = []
        self.stream = TradingStream(
            key or sim.key, sim.secret, url_override=f"ws://127.0.0.1:{sim.port}/stream"
        )
        self.stream.subscribe_trade_updates(self._on_update)
        self.thread = threading.Thread(target=self.stream.run, daemon=True)

    async def _on_update(self, update: TradeUpdate) -> None:
        self.updates.append(update)

    def events(self, order_id: Any) -> list[str]:
        return [str(u.event) for u in self.updates if u.order.id == order_id]

    def start(self, sim: Simulator) -> Listener:
        self.thread.start()
        wait_for(lambda: sim.admin.http.get("/admin/stream").json()["listening"] == 1)
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.stream.stop()
            self.thread.join(timeout=10)


@pytest.fixture
def listen() -> Iterator[Callable[[Simulator], Listener]]:
    started: list[Listener] = []

    def start(sim: Simulator) -> Listener:
        listener = Listener(sim)
        started.append(listener)
        return listener.start(sim)

    yield start
    for listener in started:
        listener.stop()


def trading(sim: Simulator) -> TradingClient:
    return TradingClient(sim.key, sim.secret, url_override=sim.url)


def buy(client: TradingClient, symbol: str, qty: int = 5) -> Any:
    return client.submit_order(
        MarketOrderRequest(
            symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
        )
    )


def test_trading_stream_receives_the_fill_of_an_order_it_submitted(
    simulator_factory: Factory, listen: Callable[[Simulator], Listener]
) -> None:
    sim = simulator_factory(fill_latency_ms=200)
    listener = listen(sim)
    sim.admin.set_price("STRM", "42.5")
    order = buy(trading(sim), "STRM")
    wait_for(lambda: listener.events(order.id) == ["new", "fill"])
    new, fill = (u for u in listener.updates if u.order.id == order.id)
    assert (
        fill.order.status.value == "filled" and fill.order.client_order_id == order.client_order_id
    )
    assert (fill.price, fill.qty, fill.position_qty) == (42.5, 5, 5)
    # The fill carries its own time: 200 ms after acceptance, as the latency knob says.
    assert (fill.timestamp - new.timestamp).total_seconds() >= 0.2
    [activity] = sim.admin.http.get("/v2/account/activities/FILL").json()
    assert activity["id"].endswith(f"::{fill.execution_id}")
    assert datetime.fromisoformat(activity["transaction_time"]) == fill.timestamp


def test_partial_fills_cancels_rejects_and_replaces_are_streamed(
    simulator_factory: Factory, listen: Callable[[Simulator], Listener]
) -> None:
    sim = simulator_factory(partial_slices=2)
    listener = listen(sim)
    client = trading(sim)
    sim.admin.set_price("EVTS", "100")
    sliced = buy(client, "EVTS", 4)
    resting = client.submit_order(
        LimitOrderRequest(
            symbol="EVTS", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=50
        )
    )
    replacement = client.replace_order_by_id(resting.id, ReplaceOrderRequest(limit_price=60))
    client.cancel_order_by_id(replacement.id)
    day = client.submit_order(
        LimitOrderRequest(
            symbol="EVTS", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=50
        )
    )
    sim.admin.session_end()
    wait_for(lambda: listener.events(day.id) == ["new", "expired"])
    assert listener.events(sliced.id) == ["new", "partial_fill", "fill"]
    assert [u.position_qty for u in listener.updates if u.order.id == sliced.id][1:] == [2, 4]
    assert listener.events(resting.id) == ["new", "replaced"]
    assert listener.events(replacement.id) == ["new", "canceled"]
    replaces = {u.order.replaces for u in listener.updates if u.order.id == replacement.id}
    assert replaces == {resting.id}


def test_a_rejected_order_is_streamed(
    simulator_factory: Factory, listen: Callable[[Simulator], Listener]
) -> None:
    sim = simulator_factory(reject_rate=1.0)
    listener = listen(sim)
    order = buy(trading(sim), "REJX")
    wait_for(lambda: listener.events(order.id) == ["rejected"])


def test_a_dropped_consumer_reconnects_and_sees_new_updates(
    simulator: Simulator, listen: Callable[[Simulator], Listener]
) -> None:
    listener = listen(simulator)
    client = trading(simulator)
    first = buy(client, "DROP")
    wait_for(lambda: "fill" in listener.events(first.id))
    assert simulator.admin.http.post("/admin/stream/drop").json() == {"dropped": 1}
    # alpaca-py backs off (0.5 to 1 s), connects again and listens (updates before that are
    # not replayed: a consumer catches up through polling).
    wait_for(lambda: simulator.admin.http.get("/admin/stream").json()["listening"] == 1)
    second = buy(client, "DROP")
    wait_for(lambda: "fill" in listener.events(second.id))


def test_stream_down_refuses_connections_until_it_is_lifted(
    simulator: Simulator, listen: Callable[[Simulator], Listener]
) -> None:
    listen(simulator)
    simulator.admin.set_faults(stream_down=True)
    wait_for(lambda: simulator.admin.http.get("/admin/stream").json()["connections"] == 0)
    with pytest.raises(Exception):  # noqa: B017 - the handshake itself is refused
        connect(f"ws://127.0.0.1:{simulator.port}/stream", open_timeout=5).close()
    simulator.admin.set_faults(stream_down=False)
    wait_for(lambda: simulator.admin.http.get("/admin/stream").json()["connections"] == 1)


def test_the_wire_protocol_matches_alpacas_handshake(shared_simulator: Simulator) -> None:
    url = f"ws://127.0.0.1:{shared_simulator.port}/stream"
    with connect(url) as ws:
        ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        early = ws.recv(timeout=5)
        assert isinstance(early, bytes)  # Alpaca's paper stream sends binary frames
        assert json.loads(early) == {
            "stream": "authorization",
            "data": {"status": "unauthorized", "action": "listen"},
        }
        ws.send(
            json.dumps(
                {"action": "auth", "key": shared_simulator.key, "secret": shared_simulator.secret}
            )
        )
        assert json.loads(ws.recv(timeout=5)) == {
            "stream": "authorization",
            "data": {"status": "authorized", "action": "authenticate"},
        }
        ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates", "bogus"]}}))
        assert json.loads(ws.recv(timeout=5)) == {
            "stream": "listening",
            "data": {"streams": ["trade_updates"]},
        }
    with connect(url) as ws:
        ws.send(
            json.dumps(
                {"action": "authenticate", "data": {"key_id": "wrong", "secret_key": "wrong"}}
            )
        )
        assert json.loads(ws.recv(timeout=5))["data"]["status"] == "unauthorized"
        with pytest.raises(Exception):  # noqa: B017 - the server closes after refusing
            ws.recv(timeout=5)


# --- market data ------------------------------------------------------------------------------


def test_latest_trade_and_quote_come_from_the_price_path(simulator_factory: Factory) -> None:
    sim = simulator_factory(no_price="NOPX*")
    data = StockHistoricalDataClient(sim.key, sim.secret, url_override=sim.url)
    sim.admin.set_price("MKTD", "123.45")
    trades = data.get_stock_latest_trade(
        StockLatestTradeRequest(symbol_or_symbols=["MKTD", "NOPX1"], feed=DataFeed.IEX)
    )
    assert set(trades) == {"MKTD"}  # no data for NOPX1: left out, as Alpaca does
    assert Decimal(str(trades["MKTD"].price)) == Decimal("123.45")
    quotes = data.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols="MKTD"))
    quote = quotes["MKTD"]
    assert Decimal(str(quote.bid_price)) + Decimal(str(quote.ask_price)) == Decimal("246.90")
    assert data.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols="NOPX2")) == {}
    single = sim.admin.http.get("/v2/stocks/MKTD/trades/latest").json()
    assert (single["symbol"], single["trade"]["p"]) == ("MKTD", 123.45)
    assert sim.admin.http.get("/v2/stocks/NOPX3/quotes/latest").status_code == 404
    sim.admin.set_faults(no_price=["MKTD"])
    assert data.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols="MKTD")) == {}


@pytest.mark.parametrize(
    "path, params, status",
    [
        ("/v2/stocks/trades/latest", {}, 400),
        ("/v2/stocks/trades/latest", {"symbols": "AAPL", "feed": "nope"}, 400),
        ("/v2/stocks/quotes/latest", {"symbols": "not a symbol"}, 400),
    ],
)
def test_bad_market_data_requests_get_a_4xx(
    shared_simulator: Simulator, path: str, params: dict[str, str], status: int
) -> None:
    response = shared_simulator.admin.http.get(path, params=params)
    assert response.status_code == status and set(response.json()) == {"code", "message"}
    anonymous = httpx.get(f"{shared_simulator.url}{path}", params={"symbols": "AAPL"})
    assert anonymous.status_code == 401
