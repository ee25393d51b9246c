"""HTTP intake end to end: a signal sent with httpx to POST /api/v1/signals becomes an order
that the worker takes to the simulator; the same signal_id again creates nothing new; a
malformed one enqueues nothing. The conflict it causes is visible in the API."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import redis
from sqlalchemy import func, select

from db.engine import Database
from db.models import Order
from strategy_client.pending import PENDING_KEY
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.simulator import Simulator
from tests.fixtures.web import Tokens, WebServer
from tests.system.helpers import wait_terminal

pytestmark = pytest.mark.system


def test_a_signal_sent_over_http_becomes_a_filled_order(
    db: Database,
    web_server: WebServer,
    tokens: Tokens,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    start_worker()
    http = httpx.Client(base_url=web_server.url, headers=tokens.headers("trade"), timeout=20)
    body = {"strategy": "trading", "signal_id": "http-1", "ticker": "AAPL", "side": "buy",
            "quantity": "5"}  # fmt: skip
    first = http.post("/api/v1/signals", json=body)
    assert first.status_code == 202, first.text
    coid = first.json()["client_order_id"]
    (order,) = wait_terminal(db, [coid])
    assert order.state == "FULLY_FILLED"
    assert [o["client_order_id"] for o in simulator.admin.orders(coid)] == [coid]
    again = http.post("/api/v1/signals", json={**body, "quantity": "7"})
    assert again.status_code == 202
    assert again.json() == {**first.json(), "enqueued": False}
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == 1
    detail = http.get(f"/api/v1/orders/{coid}", headers=tokens.headers("read")).json()
    assert detail["state"] == "FULLY_FILLED" and detail["fills"]
    http.close()


def test_a_malformed_signal_is_422_naming_the_field_and_enqueues_nothing(
    db: Database, web_server: WebServer, tokens: Tokens, redis_url: str
) -> None:
    http = httpx.Client(base_url=web_server.url, headers=tokens.headers("trade"), timeout=20)
    good = {"strategy": "trading", "signal_id": "bad-1", "ticker": "AAPL", "side": "buy",
            "quantity": "5"}  # fmt: skip
    cases = {
        "quantity": {**good, "quantity": "-3"},
        "ticker": {**good, "ticker": "not a ticker"},
        "side": {**good, "side": "hold"},
        "limit_price": {**good, "order_type": "limit"},
        "signal_id": {k: v for k, v in good.items() if k != "signal_id"},
        "extra": {**good, "extra": 1},
        "signal": ["not", "an", "object"],
    }
    for field, body in cases.items():
        response = http.post("/api/v1/signals", json=body)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["field"] == field, response.json()
    not_json = http.post("/api/v1/signals", content=b"{oops",
                         headers={"Content-Type": "application/json"})  # fmt: skip
    assert not_json.status_code == 422
    client = redis.Redis.from_url(redis_url)
    assert client.hlen(PENDING_KEY) == 0
    assert client.llen("signals") == 0
    http.close()
