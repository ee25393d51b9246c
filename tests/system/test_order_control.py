"""Order control end to end: the strategy client's cancel and replace, a protective stop that
the beat's reconciliation settles, and `--liquidate` selling through the pipeline; real worker,
beat, Postgres, Redis and simulator processes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from db.engine import Database
from db.models import Order, Position
from db.ownership import current_owner
from service_layer import ownership_moves
from strategy_client.client import SignalClient
from tests.fixtures.database import order_event_types
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.simulator import Simulator
from tests.system.helpers import eventually, order_by_coid, wait_terminal

pytestmark = pytest.mark.system


def _state_is(db: Database, coid: str, state: str) -> Order | None:
    order = order_by_coid(db, coid)
    return order if order is not None and order.state == state else None


def test_a_strategy_cancels_and_replaces_its_resting_orders(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    start_worker()
    simulator.admin.set_price("AMD", "100")
    resting = client.submit_signal(
        "trading", "AMD", "buy", 5, signal_id="tr-amd-rest", order_type="limit",
        limit_price="50", time_in_force="gtc",
    )  # fmt: skip
    other = client.submit_signal(
        "trading", "AMD", "buy", 5, signal_id="tr-amd-other", order_type="limit",
        limit_price="60", time_in_force="gtc",
    )  # fmt: skip
    eventually(lambda: _state_is(db, resting, "ORDER_SENT") and _state_is(db, other, "ORDER_SENT"))

    assert client.cancel("trading", "tr-amd-rest") == resting
    cancelled = eventually(lambda: _state_is(db, resting, "CANCELLED"))
    types = order_event_types(db, cancelled.id)
    assert types.index("order_cancel_requested") < types.index("order_cancelled")
    assert simulator.admin.orders(resting)[0]["status"] == "canceled"

    client.replace("trading", client_order_id=other, limit_price="65")
    eventually(lambda: _state_is(db, other, "CANCELLED"))
    with db.unit_of_work() as uow:
        original = uow.session.scalar(select(Order).where(Order.client_order_id == other))
        assert original is not None
        new = uow.session.scalar(select(Order).where(Order.replaces_order_id == original.id))
    assert new is not None and new.limit_price == 65 and new.state == "ORDER_SENT"

    client.cancel("long_term", client_order_id=new.client_order_id)  # not long_term's: refused
    client.cancel("trading", client_order_id=new.client_order_id)
    eventually(lambda: _state_is(db, new.client_order_id, "CANCELLED"))
    with db.unit_of_work() as uow:  # nothing filled, nothing live: the claim went back
        assert current_owner(uow.session, "AMD") is None


def test_a_protective_stop_fires_and_the_beat_books_it_and_releases_the_lock(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    start_worker()
    start_beat()
    simulator.admin.set_price("NVDA", "100")
    bought = client.submit_signal("long_term", "NVDA", "buy", 10, signal_id="lt-nvda")
    wait_terminal(db, [bought])
    stop = client.submit_signal(
        "long_term", "NVDA", "sell", 10, signal_id="lt-nvda-stop", order_type="stop",
        stop_price="95", time_in_force="gtc",
    )  # fmt: skip
    eventually(lambda: _state_is(db, stop, "ORDER_SENT"))
    simulator.admin.set_price("NVDA", "94")
    fired = eventually(lambda: _state_is(db, stop, "FULLY_FILLED"), timeout=60)
    assert fired.protective
    assert "position_stop_loss_triggered" in order_event_types(db, fired.id)
    with db.unit_of_work() as uow:
        assert current_owner(uow.session, "NVDA") is None  # flat: lock and ownership ended


def test_release_with_liquidate_sells_as_the_owner_and_releases_when_flat(
    db: Database,
    client: SignalClient,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    start_worker()
    bought = client.submit_signal("dividend", "IBM", "buy", 7, signal_id="dv-ibm")
    wait_terminal(db, [bought])
    with db.unit_of_work() as uow:  # what `arbiter ownership release IBM --liquidate` does
        move = ownership_moves.begin_liquidation(uow.session, "IBM", "test")
        uow.commit()
    sell = client.submit_signal(move.from_strategy, move.ticker, "sell", move.quantity,
                                signal_id="liquidate-IBM")  # fmt: skip
    (order,) = wait_terminal(db, [sell])
    assert order.state == "FULLY_FILLED", order.reason
    with db.unit_of_work() as uow:
        held = uow.session.scalars(select(Position.quantity).where(Position.ticker == "IBM"))
        assert sum(held) == 0
        assert current_owner(uow.session, "IBM") is None
