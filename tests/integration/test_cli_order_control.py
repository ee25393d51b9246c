"""`arbiter orders cancel|replace`, `ownership transfer|release [--liquidate]` and the review
queue's corrections, against a real Postgres (and the simulator where the brokerage is asked)."""

from __future__ import annotations

import json
from decimal import Decimal

from sqlalchemy import select

from core.states import OrderState
from db.engine import Database
from db.models import Order, Position, TickerOwnership
from db.strategies import require_strategy
from tests.fixtures.simulator import Simulator
from tests.integration.test_cli import (  # noqa: F401  (fixtures)
    Invoke,
    _fresh_settings,
    cli,
    make_order,
    ok,
    own,
)

S = OrderState


def _state(db: Database, order_id: int) -> str:
    with db.unit_of_work() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        return order.state


def _hold(db: Database, ticker: str, strategy: str, quantity: str, avg: str) -> None:
    with db.unit_of_work() as uow:
        owner = require_strategy(uow.session, strategy)
        uow.session.add(
            Position(
                strategy_id=owner.id,
                ticker=ticker,
                quantity=Decimal(quantity),
                avg_cost=Decimal(avg),
            )
        )
        uow.commit()


def test_orders_cancel_before_submission_and_json(cli: Invoke, db: Database) -> None:
    order_id = make_order(db, "c-1", path=[S.VALIDATING])
    result = json.loads(ok(cli("orders", "cancel", str(order_id), "--json")).stdout)
    assert (result["order_id"], result["outcome"], result["state"]) == (
        order_id,
        "cancelled",
        "CANCELLED",
    )
    assert _state(db, order_id) == "CANCELLED"
    again = ok(cli("orders", "cancel", str(order_id)))
    assert "already cancelled" in again.output


def test_orders_cancel_of_a_final_order_exits_1_naming_its_state(cli: Invoke, db: Database) -> None:
    order_id = make_order(db, "c-2", path=[S.REJECTED])
    result = cli("orders", "cancel", str(order_id))
    assert result.exit_code == 1
    assert "it is REJECTED" in result.output


def test_orders_cancel_of_an_unknown_order_exits_2(cli: Invoke) -> None:
    result = cli("orders", "cancel", "no-such-order")
    assert result.exit_code == 2
    assert "no order 'no-such-order'" in result.output


def test_orders_cancel_at_the_brokerage(cli: Invoke, db: Database, simulator: Simulator) -> None:
    from core.brokerage import OrderRequest, OrderType, Side
    from db.order_manager import OrderManager

    brokerage = simulator.brokerage()
    order_id = make_order(db, "c-live", path=[S.VALIDATING, S.ORDER_PENDING])
    with db.unit_of_work() as uow:
        order = OrderManager(uow.session).lock(order_id)
        live = brokerage.submit(
            OrderRequest(
                order.client_order_id, "AAPL", Side.BUY, Decimal(10), OrderType.LIMIT,
                Decimal("0.01"),
            )
        )  # fmt: skip
        OrderManager(uow.session).transition(
            order, S.ORDER_SENT, reason="sent", actor="test",
            brokerage_order_id=live.brokerage_order_id,
        )  # fmt: skip
        coid = order.client_order_id
        uow.commit()
    result = ok(cli("orders", "cancel", coid, env={"ARBITER_BROKERAGE_URL": simulator.url}))
    assert f"order {order_id}: CANCELLED" in result.output
    assert simulator.admin.orders(coid)[0]["status"] == "canceled"


def test_orders_replace_needs_a_change_and_an_open_order(cli: Invoke, db: Database) -> None:
    order_id = make_order(db, "r-1", path=[S.VALIDATING])
    result = cli("orders", "replace", str(order_id), "--quantity", "5")
    assert result.exit_code == 1 and "cannot replace" in result.output
    sent = make_order(db, "r-2", path=[S.VALIDATING, S.ORDER_PENDING, S.ORDER_SENT])
    result = cli("orders", "replace", str(sent))
    assert result.exit_code == 2 and "nothing to replace" in result.output
    result = cli("orders", "replace", str(sent), "--quantity", "-3")
    assert result.exit_code == 2 and "--quantity" in result.output


def test_ownership_release_refuses_a_held_position_and_transfer_moves_it(
    cli: Invoke, db: Database
) -> None:
    own(db, "AMD", "trading")
    _hold(db, "AMD", "trading", "40", "120")
    refused = cli("ownership", "release", "AMD")
    assert refused.exit_code == 2
    assert "trading holds 40 AMD" in refused.output
    moved = ok(cli("ownership", "transfer", "AMD", "--to", "long_term", "--reason", "rebalance"))
    assert "AMD moved from trading to long_term with a position of 40" in moved.output
    with db.unit_of_work() as uow:
        owner = uow.session.scalar(
            select(TickerOwnership).where(
                TickerOwnership.ticker == "AMD", TickerOwnership.released_at.is_(None)
            )
        )
        assert owner is not None and owner.strategy.name == "long_term"


def test_ownership_transfer_bad_input_exits_2(cli: Invoke, db: Database) -> None:
    assert cli("ownership", "transfer", "AMD", "--to", "long_term").exit_code == 2  # no owner
    own(db, "AMD", "trading")
    result = cli("ownership", "transfer", "AMD", "--to", "nobody")
    assert result.exit_code == 2


def test_ownership_release_liquidate_without_redis_exits_2_and_flat_release_works(
    cli: Invoke, db: Database
) -> None:
    own(db, "AMD", "trading")
    ok(cli("ownership", "release", "AMD", "--liquidate"))  # flat: released at once
    with db.unit_of_work() as uow:
        live = uow.session.scalars(
            select(TickerOwnership).where(TickerOwnership.released_at.is_(None))
        ).all()
    assert live == []
