"""Ownership moves that keep the books, on a real Postgres: transfer with the position,
release refused while shares are held, liquidation's start, deactivation that keeps ownership
of a held position and the override that moves both, and the review queue's corrections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.brokerage import Side
from core.errors import InvalidInput, InvalidTransition
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.models import ConflictLog, EventRecord, Order, Position, ReviewItem, TickerOwnership
from db.order_manager import OrderManager
from db.ownership import claim, current_owner
from db.positions import book_fill
from db.strategies import require_strategy, set_active
from service_layer import ownership_moves, review_actions
from tests.integration.test_pipeline_steps import _raw, _run
from tests.integration.test_reconcile import build_order

S = OrderState


def _own(db: Database, ticker: str, strategy: str, quantity: str, price: str) -> None:
    """`strategy` owns `ticker` (locked as its config says) and holds `quantity` at `price`."""
    with db.unit_of_work() as uow:
        owner = require_strategy(uow.session, strategy)
        claim(uow.session, ticker, owner, None, reason="test")
        if Decimal(quantity):
            order = build_order(db, to=S.SIGNAL_RECEIVED, ticker=ticker, strategy=strategy)
            book_fill(
                uow.session,
                strategy_id=owner.id,
                strategy_name=owner.name,
                ticker=ticker,
                side=Side.BUY,
                quantity=Decimal(quantity),
                price=Decimal(price),
                order_id=order.id,
            )
        uow.commit()


def _position(db: Database, ticker: str, strategy: str) -> tuple[Decimal, Decimal]:
    with db.unit_of_work() as uow:
        owner = require_strategy(uow.session, strategy)
        row = uow.session.scalar(
            select(Position).where(Position.ticker == ticker, Position.strategy_id == owner.id)
        )
        return (row.quantity, row.avg_cost) if row else (Decimal(0), Decimal(0))


def _owner(db: Database, ticker: str) -> TickerOwnership | None:
    with db.unit_of_work() as uow:
        row = current_owner(uow.session, ticker)
        if row is not None:
            _ = row.strategy.name
        return row


def test_a_transfer_moves_ownership_with_quantity_and_average_cost(db: Database) -> None:
    _own(db, "AMD", "trading", "40", "120.5")
    with db.unit_of_work() as uow:
        move = ownership_moves.transfer_ownership(uow.session, "amd", "long_term", "rebalance")
        uow.commit()
    assert (move.from_strategy, move.to_strategy, move.quantity) == (
        "trading",
        "long_term",
        Decimal(40),
    )
    owner = _owner(db, "AMD")
    assert owner is not None and owner.strategy.name == "long_term"
    assert _position(db, "AMD", "long_term") == (Decimal(40), Decimal("120.5"))
    assert _position(db, "AMD", "trading") == (Decimal(0), Decimal(0))
    with db.unit_of_work() as uow:
        event = uow.session.scalar(
            select(EventRecord).where(EventRecord.type == "ownership_transferred")
        )
    assert event is not None
    assert event.payload["position_moved"] == "40.000000000"
    assert "rebalance" in event.payload["reason"]


def test_a_transfer_is_refused_while_the_owner_has_orders_live(db: Database) -> None:
    _own(db, "AMD", "trading", "40", "120")
    build_order(db, to=S.ORDER_SENT, ticker="AMD", strategy="trading")
    with db.unit_of_work() as uow, pytest.raises(InvalidInput, match="1 order"):
        ownership_moves.transfer_ownership(uow.session, "AMD", "long_term", "x")
    owner = _owner(db, "AMD")
    assert owner is not None and owner.strategy.name == "trading"


def test_a_release_is_refused_while_the_owner_holds_shares_naming_the_position(
    db: Database,
) -> None:
    _own(db, "NVDA", "long_term", "25", "400")
    with (
        db.unit_of_work() as uow,
        pytest.raises(ownership_moves.PositionHeld, match="long_term holds 25 NVDA"),
    ):
        ownership_moves.release_ownership(uow.session, "NVDA", "operator")
    assert _owner(db, "NVDA") is not None


def test_a_flat_owner_is_released(db: Database) -> None:
    _own(db, "NVDA", "long_term", "0", "0")
    with db.unit_of_work() as uow:
        ownership_moves.release_ownership(uow.session, "NVDA", "operator")
        uow.commit()
    assert _owner(db, "NVDA") is None


def test_liquidation_ends_the_lock_now_and_keeps_the_owner_until_flat(db: Database) -> None:
    _own(db, "NVDA", "long_term", "25", "400")
    with db.unit_of_work() as uow:
        move = ownership_moves.begin_liquidation(uow.session, "NVDA", "operator")
        uow.commit()
    assert (move.from_strategy, move.quantity) == ("long_term", Decimal(25))
    owner = _owner(db, "NVDA")
    assert owner is not None and owner.strategy.name == "long_term"
    assert owner.locked_until is not None and owner.locked_until <= datetime.now(UTC)


def test_deactivation_keeps_ownership_of_a_held_position_and_releases_its_lock(
    db: Database,
) -> None:
    _own(db, "AAPL", "long_term", "100", "150")
    _own(db, "MSFT", "long_term", "0", "0")
    with db.unit_of_work() as uow:
        set_active(uow.session, "long_term", False, "test")
        uow.commit()
    aapl = _owner(db, "AAPL")
    assert aapl is not None and aapl.strategy.name == "long_term"
    assert aapl.locked_until is not None and aapl.locked_until <= datetime.now(UTC)
    assert _owner(db, "MSFT") is None  # nothing held: released


def test_after_deactivation_an_active_strategys_signal_overrides_and_moves_the_position(
    db: Database,
) -> None:
    _own(db, "AAPL", "long_term", "100", "150")
    with db.unit_of_work() as uow:
        set_active(uow.session, "long_term", False, "test")
        uow.commit()
    # aggressive (priority 30) is below long_term (100): only inactivity lets it win.
    order = _run(db, _raw("ag", strategy="aggressive", ticker="AAPL", side="sell", quantity="30"))
    assert order.state == "ORDER_PENDING", order.reason
    assert "inactive and ranks below every active strategy" in (order.conflict_reasoning or "")
    owner = _owner(db, "AAPL")
    assert owner is not None and owner.strategy.name == "aggressive"
    assert _position(db, "AAPL", "aggressive") == (Decimal(100), Decimal(150))
    with db.unit_of_work() as uow:
        log = uow.session.scalar(select(ConflictLog).where(ConflictLog.ticker == "AAPL"))
    assert log is not None and log.resolution == "priority_override"


def test_review_corrects_a_cancelled_order_that_the_brokerage_filled(db: Database) -> None:
    built = build_order(db, to=S.ORDER_SENT, quantity="10")
    with db.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        manager.transition(built.id, S.CANCELLED, reason="operator", actor="t",
                           cause=TransitionCause.OPERATOR)
        order = manager.update(built.id, filled_quantity=Decimal(10), avg_fill_price=Decimal(5))
        manager.flag_for_review(order, "brokerage reports filled for a CANCELLED order", actor="t")
        uow.commit()
    with db.unit_of_work() as uow:
        item = uow.session.scalar(select(ReviewItem).where(ReviewItem.order_id == built.id))
        assert item is not None
        with pytest.raises(InvalidTransition):  # not a correction the table knows
            review_actions.correct_order(uow.session, item, S.REJECTED, "no", "cli")
    with db.unit_of_work() as uow:
        item = uow.session.scalar(select(ReviewItem).where(ReviewItem.order_id == built.id))
        assert item is not None
        review_actions.correct_order(uow.session, item, S.FULLY_FILLED, "fill found", "cli")
        uow.commit()
    with db.unit_of_work() as uow:
        order = uow.session.get(Order, built.id)
        item = uow.session.scalar(select(ReviewItem).where(ReviewItem.order_id == built.id))
        event = uow.session.scalar(select(EventRecord).where(EventRecord.type == "order_corrected"))
    assert order is not None and order.state == "FULLY_FILLED"
    assert not order.needs_manual_review
    assert item is not None and item.resolved_at is not None
    assert event is not None and event.payload["from_state"] == "CANCELLED"


def test_review_adopts_the_brokerages_quantity_for_a_position_mismatch(db: Database) -> None:
    _own(db, "TSLA", "trading", "10", "200")
    with db.unit_of_work() as uow:
        uow.session.add(ReviewItem(kind="position", ticker="TSLA", reason="mismatch", details={}))
        uow.commit()
    with db.unit_of_work() as uow:
        item = uow.session.scalar(select(ReviewItem).where(ReviewItem.kind == "position"))
        assert item is not None
        adjusted = review_actions.adopt_brokerage_position(
            uow.session,
            item,
            brokerage_quantity=Decimal(12),
            brokerage_avg_price=Decimal(201),
            strategy=None,
            note="the brokerage is right",
            actor="cli",
        )
        uow.commit()
    assert (adjusted.before, adjusted.after) == (Decimal(10), Decimal(12))
    assert _position(db, "TSLA", "trading")[0] == Decimal(12)
    with db.unit_of_work() as uow:
        event = uow.session.scalar(
            select(EventRecord).where(EventRecord.type == "position_adjusted")
        )
    assert event is not None and Decimal(event.payload["after"]) == 12


def test_locks_expire_as_before(db: Database) -> None:
    # the lock of a fresh long_term claim is 90 days out
    _own(db, "IBM", "long_term", "1", "100")
    owner = _owner(db, "IBM")
    assert owner is not None and owner.locked_until is not None
    assert owner.locked_until > datetime.now(UTC) + timedelta(days=80)
