"""Four strategies racing on five tickers through two worker processes."""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from sqlalchemy import select

from db.engine import Database
from db.models import Fill, Order, TickerOwnership
from strategy_client.client import SignalClient
from tests.fixtures.keys import db_keys
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.simulator import Simulator
from tests.system.helpers import wait_terminal

pytestmark = pytest.mark.system

STRATEGIES = ["long_term", "dividend", "trading", "aggressive"]
TICKERS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN"]


def test_two_workers_four_strategies_two_hundred_signals_never_share_a_ticker(
    db: Database,
    redis_url: str,
    broker_url: str,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    start_worker("w1", concurrency=1)
    start_worker("w2", concurrency=1)
    rng = random.Random(7)
    client = SignalClient(redis_url, broker_url, keys=db_keys(db))
    coids = [
        client.submit_signal(
            rng.choice(STRATEGIES),
            rng.choice(TICKERS),
            rng.choice(["buy", "buy", "sell"]),
            rng.randint(1, 20),
            signal_id=f"race-{i}",
        )
        for i in range(200)
    ]
    orders = wait_terminal(db, coids, timeout=120)
    assert len(orders) == 200
    states = Counter(o.state for o in orders)
    # The race must really have raced: fills and conflict rejections both happened.
    assert states["FULLY_FILLED"] > 20, states
    assert sum("BLOCKED" in (o.reason or "") for o in orders) > 5, states

    with db.unit_of_work() as uow:
        history = list(uow.session.scalars(select(TickerOwnership)))
        fills = list(
            uow.session.execute(select(Fill, Order).join(Order, Order.id == Fill.order_id))
        )

    # At every moment at most one owner per ticker: no two ownership intervals overlap.
    by_ticker: dict[str, list[TickerOwnership]] = defaultdict(list)
    for row in history:
        by_ticker[row.ticker].append(row)
    for ticker, rows in by_ticker.items():
        rows.sort(key=lambda r: r.acquired_at)
        for earlier, later in itertools.pairwise(rows):
            assert earlier.released_at is not None, f"{ticker}: two live owners"
            assert earlier.released_at <= later.acquired_at, f"{ticker}: overlapping owners"

    # No strategy holds a position in a ticker it did not own when the fill was booked.
    for fill, order in fills:
        owned = [
            r
            for r in by_ticker[order.ticker]
            if r.strategy_id == order.strategy_id
            and r.acquired_at <= fill.created_at
            and (r.released_at is None or fill.created_at <= r.released_at)
        ]
        assert owned, f"{order.strategy_name} filled {order.ticker} without owning it"

    # The brokerage holds exactly one order per client_order_id, and only for accepted ones.
    at_brokerage = Counter(o["client_order_id"] for o in simulator.admin.orders())
    assert all(n == 1 for n in at_brokerage.values())
    sent = {o.client_order_id for o in orders if o.brokerage_order_id}
    assert set(at_brokerage) == sent
