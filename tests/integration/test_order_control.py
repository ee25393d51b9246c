"""Cancel one order in each state, a cancel racing a fill, and a cancel recorded while the
submission is in flight; on a real Postgres and a real brokerage simulator over HTTP."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from adapters.alpaca import AlpacaBrokerage
from core.errors import InvalidInput, OrderNotOpen
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.models import Fill, Order, OrderTransition, Position, TickerOwnership
from db.order_manager import OrderManager
from service_layer.cancellation import CancelOutcome, cancel_order
from service_layer.conflict_check import check_conflict
from service_layer.submission import begin_submit, submit
from service_layer.validation import validate
from tests.fixtures.database import order_event_types
from tests.fixtures.simulator import Simulator, wait_for
from tests.integration.test_pipeline_steps import LIMITS, PRICE
from tests.integration.test_reconcile import build_order, order_row, place

S = OrderState


def _trail(db: Database, order_id: int) -> list[tuple[str, str]]:
    with db.unit_of_work() as uow:
        return [
            (t.from_state, t.to_state)
            for t in uow.session.scalars(
                select(OrderTransition)
                .where(OrderTransition.order_id == order_id)
                .order_by(OrderTransition.id)
            )
        ]


@pytest.mark.parametrize("state", [S.SIGNAL_RECEIVED, S.VALIDATING, S.ORDER_PENDING])
def test_a_cancel_before_submission_is_final_at_once_and_later_steps_do_nothing(
    db: Database, shared_brokerage: AlpacaBrokerage, state: OrderState
) -> None:
    built = build_order(db, to=state, with_claim=state is S.ORDER_PENDING)
    result = cancel_order(db, shared_brokerage, built.id, requested_by="operator")
    assert (result.outcome, result.state) == (CancelOutcome.CANCELLED, "CANCELLED")
    with db.unit_of_work() as uow:  # the chain's later links find it final
        validate(uow.session, built.id, LIMITS, actor="t", reference_price=lambda _t: PRICE)
        check_conflict(uow.session, built.id, actor="t")
        assert begin_submit(uow.session, built.id) is None
        uow.commit()
    order = order_row(db, built.id)
    assert order.state == "CANCELLED" and order.submit_attempts == 0
    assert order.cancel_requested_by == "operator"
    assert _trail(db, built.id)[-1] == (state.value, "CANCELLED")
    assert "order_cancelled" in order_event_types(db, built.id)
    with db.unit_of_work() as uow:  # a buy's claim goes back with it
        live = uow.session.scalars(
            select(TickerOwnership).where(TickerOwnership.released_at.is_(None))
        ).all()
    assert live == []


def test_a_cancel_by_client_order_id_is_the_same_cancel(
    db: Database, shared_brokerage: AlpacaBrokerage
) -> None:
    built = build_order(db, to=S.SIGNAL_RECEIVED)
    result = cancel_order(db, shared_brokerage, built.client_order_id, requested_by="cli")
    assert result.order_id == built.id and result.state == "CANCELLED"


def test_a_repeated_cancel_is_harmless(db: Database, shared_brokerage: AlpacaBrokerage) -> None:
    built = build_order(db, to=S.SIGNAL_RECEIVED)
    cancel_order(db, shared_brokerage, built.id, requested_by="cli")
    again = cancel_order(db, shared_brokerage, built.id, requested_by="cli")
    assert again.outcome is CancelOutcome.ALREADY_CANCELLED
    assert order_event_types(db, built.id).count("order_cancelled") == 1


@pytest.mark.parametrize("final", [S.REJECTED, S.FAILED])
def test_a_cancel_of_a_final_order_is_a_clear_error_naming_its_state(
    db: Database, shared_brokerage: AlpacaBrokerage, final: OrderState
) -> None:
    built = build_order(db, to=S.ORDER_PENDING)
    with db.unit_of_work() as uow:
        OrderManager(uow.session).transition(
            built.id, final, reason="test", actor="t", cause=TransitionCause.BROKERAGE_REPORT
        )
        uow.commit()
    with pytest.raises(OrderNotOpen, match=f"it is {final.value}"):
        cancel_order(db, shared_brokerage, built.id, requested_by="cli")
    assert order_row(db, built.id).state == final.value


def test_a_strategy_cancels_only_its_own_orders(
    db: Database, shared_brokerage: AlpacaBrokerage
) -> None:
    built = build_order(db, to=S.SIGNAL_RECEIVED, strategy="trading")
    with pytest.raises(InvalidInput, match="not long_term's"):
        cancel_order(db, shared_brokerage, built.id, requested_by="x", strategy="long_term")
    assert order_row(db, built.id).state == "SIGNAL_RECEIVED"


def test_a_cancel_at_the_brokerage_is_recorded_then_final_when_the_brokerage_confirms(
    db: Database, shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage
) -> None:
    # A resting limit far below the market: the simulator holds it open.
    built = _resting_limit(db, shared_simulator, shared_brokerage, "CNCL")
    result = cancel_order(db, shared_brokerage, built.id, requested_by="operator")
    assert (result.outcome, result.state) == (CancelOutcome.CANCELLED, "CANCELLED")
    events = order_event_types(db, built.id)
    # The request is its own fact, before the brokerage's confirmation.
    assert events.index("order_cancel_requested") < events.index("order_cancelled")
    assert _trail(db, built.id)[-1] == ("ORDER_SENT", "CANCELLED")
    (broker,) = shared_simulator.admin.orders(built.client_order_id)
    assert broker["status"] == "canceled"


def test_a_cancel_that_a_fill_beat_books_the_fill(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    # The brokerage filled the order; Arbiter still holds it ORDER_SENT (not reconciled yet).
    built = build_order(db, to=S.ORDER_PENDING, ticker="RACE", attempts=1, with_claim=True)
    broker_id = place(db, brokerage, built)
    with db.unit_of_work() as uow:
        OrderManager(uow.session).transition(
            built.id, S.ORDER_SENT, reason="accepted", actor="t", brokerage_order_id=broker_id,
            cause=TransitionCause.BROKERAGE_REPORT,
        )
        uow.commit()
    wait_for(lambda: simulator.admin.orders(built.client_order_id)[0]["status"] == "filled")
    result = cancel_order(db, brokerage, built.id, requested_by="operator")
    assert (result.outcome, result.state) == (CancelOutcome.FILLED, "FULLY_FILLED")
    with db.unit_of_work() as uow:
        fills = uow.session.scalars(select(Fill).where(Fill.order_id == built.id)).all()
        position = uow.session.scalar(select(Position).where(Position.ticker == "RACE"))
    assert sum(f.quantity for f in fills) == Decimal(10)
    assert position is not None and position.quantity == Decimal(10)


def test_a_cancel_while_the_submission_is_in_flight_is_carried_out_after_it(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.pause_fills()
    built = build_order(db, to=S.ORDER_PENDING, ticker="FLY", attempts=1, with_claim=True)
    result = cancel_order(db, brokerage, built.id, requested_by="operator")
    assert (result.outcome, result.state) == (CancelOutcome.REQUESTED, "ORDER_PENDING")
    assert order_row(db, built.id).cancel_requested_at is not None
    # The submission's outcome becomes known: the brokerage holds the order; then the cancel.
    submit(db, brokerage, built.id)
    order = order_row(db, built.id)
    assert order.state == "CANCELLED"
    assert [t for _, t in _trail(db, built.id)][-2:] == ["ORDER_SENT", "CANCELLED"]
    (broker,) = simulator.admin.orders(built.client_order_id)
    assert broker["status"] == "canceled"


def _resting_limit(db: Database, sim: Simulator, brokerage: AlpacaBrokerage, ticker: str) -> Order:
    built = build_order(db, to=S.ORDER_PENDING, ticker=ticker, attempts=1)
    price = Decimal(sim.admin.price(ticker))
    with db.unit_of_work() as uow:  # a limit far below the market
        order = uow.session.get(Order, built.id)
        assert order is not None
        order.order_type, order.limit_price = "limit", (price / 4).quantize(Decimal("0.01"))
        uow.commit()
    broker_id = place(db, brokerage, built)
    with db.unit_of_work() as uow:
        OrderManager(uow.session).transition(
            built.id, S.ORDER_SENT, reason="accepted", actor="t", brokerage_order_id=broker_id,
            cause=TransitionCause.BROKERAGE_REPORT,
        )
        uow.commit()
    return order_row(db, built.id)
