"""Stops, legs, replace, stop-loss protection and reference prices through Arbiter's own
pipeline steps, against a real Postgres and a real simulator whose prices the test steers.

Each test trades a ticker of its own, so the tests share one simulator."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from adapters.alpaca import AlpacaBrokerage
from adapters.market_data import AlpacaMarketData
from core.market_data import ReferencePrices
from db.engine import Database
from db.models import EventRecord, Order, Position, TickerOwnership
from db.ownership import current_owner
from service_layer.conflict_check import check_conflict
from service_layer.intake import intake
from service_layer.reconciliation import reconcile_open_orders
from service_layer.replacement import ReplaceChanges, ReplaceRefused, replace_order
from service_layer.submission import submit
from service_layer.validation import validate
from tests.fixtures.keys import signed
from tests.fixtures.simulator import Simulator, wait_for
from tests.integration.test_pipeline_steps import LIMITS

Pipeline = Callable[..., Order]


def ticker() -> str:
    return "Z" + uuid.uuid4().hex[:5].upper()


@pytest.fixture
def market(shared_simulator: Simulator) -> AlpacaMarketData:
    return AlpacaMarketData(shared_simulator.url, shared_simulator.key, shared_simulator.secret)


@pytest.fixture
def run(db: Database, shared_brokerage: AlpacaBrokerage, market: AlpacaMarketData) -> Pipeline:
    """intake -> validate (reference prices from the simulator) -> check_conflict -> submit."""
    prices = ReferencePrices(market, ttl_s=0, miss_ttl_s=0)

    def pipeline(strategy: str, symbol: str, side: str, quantity: Any, **extra: Any) -> Order:
        raw = {"strategy": strategy, "signal_id": f"s-{uuid.uuid4().hex[:10]}",
               "ticker": symbol, "side": side, "quantity": str(quantity), **extra}  # fmt: skip
        with db.unit_of_work() as uow:
            order_id = intake(uow.session, signed(db, raw), actor="t", message_id="m")
            assert order_id is not None
            uow.commit()
        with db.unit_of_work() as uow:
            validate(uow.session, order_id, LIMITS, actor="t", reference_price=prices.price)
            uow.commit()
        with db.unit_of_work() as uow:
            check_conflict(uow.session, order_id, actor="t")
            uow.commit()
        submit(db, shared_brokerage, order_id)
        return row(db, order_id)

    return pipeline


def row(db: Database, order_id: int) -> Order:
    with db.unit_of_work() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        return order


def reconcile(db: Database, brokerage: AlpacaBrokerage) -> None:
    reconcile_open_orders(db, brokerage, never_received_grace_s=60)


def settles(db: Database, brokerage: AlpacaBrokerage, order_id: int, state: str) -> Order:
    def done() -> Order | None:
        reconcile(db, brokerage)
        order = row(db, order_id)
        return order if order.state == state else None

    return wait_for(done, timeout=15, interval=0.2)


def events(db: Database, kind: str, order_id: int | None = None) -> list[EventRecord]:
    query = select(EventRecord).where(EventRecord.type == kind)
    if order_id is not None:
        query = query.where(EventRecord.order_id == order_id)
    with db.unit_of_work() as uow:
        return list(uow.session.scalars(query.order_by(EventRecord.seq)))


def position(db: Database, symbol: str) -> Decimal:
    with db.unit_of_work() as uow:
        held = uow.session.scalars(select(Position.quantity).where(Position.ticker == symbol))
        return sum(held, Decimal(0))


def owner(db: Database, symbol: str) -> TickerOwnership | None:
    with db.unit_of_work() as uow:
        found = current_owner(uow.session, symbol)
        if found is not None:
            _ = found.strategy.name
        return found


def legs(db: Database, parent_id: int) -> dict[str, Order]:
    with db.unit_of_work() as uow:
        rows = uow.session.scalars(select(Order).where(Order.parent_order_id == parent_id))
        return {leg.leg_role or "": leg for leg in rows}


# -- stops ----------------------------------------------------------------------------------


def test_a_protective_stop_fires_books_the_fill_emits_the_stop_loss_and_releases_the_lock(
    db: Database, shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage, run: Pipeline
) -> None:
    sym = ticker()
    shared_simulator.admin.set_price(sym, "100")
    bought = run("long_term", sym, "buy", 10)
    assert bought.state == "FULLY_FILLED", bought.reason
    locked = owner(db, sym)
    assert locked is not None and locked.locked_until is not None  # long_term: 90 days
    stop = run("long_term", sym, "sell", 10, order_type="stop", stop_price="95",
               time_in_force="gtc")  # fmt: skip
    assert (stop.state, stop.protective) == ("ORDER_SENT", True)
    shared_simulator.admin.set_price(sym, "94")
    filled = settles(db, shared_brokerage, stop.id, "FULLY_FILLED")
    assert filled.avg_fill_price == Decimal(94)
    (event,) = events(db, "position_stop_loss_triggered", stop.id)
    assert event.strategy == "long_term" and event.ticker == sym
    assert (Decimal(event.payload["quantity"]), Decimal(event.payload["fill_price"])) == (10, 94)
    assert Decimal(event.payload["stop_price"]) == 95 and event.payload["lock_released"] is True
    assert position(db, sym) == 0
    assert owner(db, sym) is None  # flat: the ownership ended too


def test_the_lock_ends_at_once_while_the_ownership_waits_for_flat(
    db: Database, shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage, run: Pipeline
) -> None:
    sym = ticker()
    shared_simulator.admin.set_price(sym, "50")
    assert run("dividend", sym, "buy", 10).state == "FULLY_FILLED"  # locked 365 days
    stop = run("dividend", sym, "sell", 4, order_type="stop", stop_price="45",
               time_in_force="gtc")  # fmt: skip
    shared_simulator.admin.set_price(sym, "44")
    settles(db, shared_brokerage, stop.id, "FULLY_FILLED")
    still = owner(db, sym)
    assert still is not None and still.strategy.name == "dividend"
    assert still.locked_until is not None and still.locked_until <= datetime.now(UTC)
    assert position(db, sym) == 6
    # Unlocked, so a higher priority now overrides, and the 6 shares move with the ticker.
    override = run("long_term", sym, "buy", 1)
    assert override.state == "FULLY_FILLED", override.reason
    assert "PRIORITY_OVERRIDE" in (override.conflict_reasoning or "")
    taken = owner(db, sym)
    assert taken is not None and taken.strategy.name == "long_term"
    assert position(db, sym) == 7


def test_a_stop_limit_and_a_trailing_stop_trigger_on_the_price_path(
    db: Database, shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage, run: Pipeline
) -> None:
    sym = ticker()
    shared_simulator.admin.set_price(sym, "100")
    assert run("trading", sym, "buy", 10).state == "FULLY_FILLED"
    stop_limit = run("trading", sym, "sell", 5, order_type="stop_limit", stop_price="95",
                     limit_price="94", time_in_force="gtc")  # fmt: skip
    trailing = run("trading", sym, "sell", 5, order_type="trailing_stop", trail_price="3",
                   time_in_force="gtc")  # fmt: skip
    assert stop_limit.state == trailing.state == "ORDER_SENT"
    shared_simulator.admin.set_price(sym, "110")  # the trailing stop's mark rises to 110
    wait_for(lambda: shared_simulator.admin.orders(trailing.client_order_id)[0]["hwm"] == "110")
    shared_simulator.admin.set_price(sym, "106.5")  # 3.5 below the mark: it fires
    fired = settles(db, shared_brokerage, trailing.id, "FULLY_FILLED")
    assert fired.avg_fill_price == Decimal("106.5")
    assert row(db, stop_limit.id).state == "ORDER_SENT"
    shared_simulator.admin.set_price(sym, "94.5")  # at or below the stop, inside the limit
    settles(db, shared_brokerage, stop_limit.id, "FULLY_FILLED")
    assert position(db, sym) == 0
    assert len(events(db, "position_stop_loss_triggered")) >= 2


# -- legs ------------------------------------------------------------------------------------


def test_a_bracket_buy_records_its_legs_and_the_stop_leg_fires_and_cancels_the_other(
    db: Database, shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage, run: Pipeline
) -> None:
    sym = ticker()
    shared_simulator.admin.set_price(sym, "100")
    parent = run("long_term", sym, "buy", 10, take_profit={"limit_price": "120"},
                 stop_loss={"stop_price": "90"}, time_in_force="gtc")  # fmt: skip
    assert parent.order_class == "bracket"
    settles(db, shared_brokerage, parent.id, "FULLY_FILLED")
    wait_for(lambda: set(legs(db, parent.id)) == {"take_profit", "stop_loss"} or
             reconcile(db, shared_brokerage))  # fmt: skip
    both = legs(db, parent.id)
    assert both["stop_loss"].protective and not both["take_profit"].protective
    assert {leg.strategy_name for leg in both.values()} == {"long_term"}
    shared_simulator.admin.set_price(sym, "89")
    settles(db, shared_brokerage, both["stop_loss"].id, "FULLY_FILLED")
    settles(db, shared_brokerage, both["take_profit"].id, "CANCELLED")
    assert position(db, sym) == 0
    (event,) = events(db, "position_stop_loss_triggered")
    assert event.order_id == both["stop_loss"].id and event.payload["parent_order_id"] == parent.id
    assert owner(db, sym) is None


def test_an_oco_exit_fills_its_take_profit_and_cancels_the_stop(
    db: Database, shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage, run: Pipeline
) -> None:
    sym = ticker()
    shared_simulator.admin.set_price(sym, "100")
    assert run("trading", sym, "buy", 8).state == "FULLY_FILLED"
    oco = run("trading", sym, "sell", 8, order_type="limit", order_class="oco",
              take_profit={"limit_price": "110"}, stop_loss={"stop_price": "90"},
              time_in_force="gtc")  # fmt: skip
    assert oco.state == "ORDER_SENT", oco.reason
    wait_for(lambda: "stop_loss" in legs(db, oco.id) or reconcile(db, shared_brokerage))
    shared_simulator.admin.set_price(sym, "111")
    settles(db, shared_brokerage, oco.id, "FULLY_FILLED")
    settles(db, shared_brokerage, legs(db, oco.id)["stop_loss"].id, "CANCELLED")
    assert position(db, sym) == 0
    assert events(db, "position_stop_loss_triggered") == []


# -- replace ---------------------------------------------------------------------------------


def test_replace_makes_a_linked_order_and_ends_the_replaced_one(
    db: Database, shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage, run: Pipeline
) -> None:
    sym = ticker()
    shared_simulator.admin.set_price(sym, "100")
    resting = run("trading", sym, "buy", 10, order_type="limit", limit_price="80",
                  time_in_force="gtc")  # fmt: skip
    assert resting.state == "ORDER_SENT"
    result = replace_order(
        db, shared_brokerage, resting.id, ReplaceChanges(limit_price=Decimal(85)),
        requested_by="operator", limits=LIMITS,
    )  # fmt: skip
    new = row(db, result.replacement_id)
    assert (new.state, new.replaces_order_id, new.limit_price) == ("ORDER_SENT", resting.id, 85)
    assert new.quantity == 10 and new.strategy_name == "trading"
    old = settles(db, shared_brokerage, resting.id, "CANCELLED")
    assert old.reason == "brokerage: replaced"
    (announced,) = events(db, "order_replaced", resting.id)
    assert announced.payload["replacement_order_id"] == new.id
    shared_simulator.admin.set_price(sym, "84")
    settles(db, shared_brokerage, new.id, "FULLY_FILLED")
    owned = owner(db, sym)
    assert owned is not None and owned.strategy.name == "trading"  # the claim carried over
    assert position(db, sym) == 10


def test_a_larger_replace_is_checked_by_the_risk_rules_again(
    db: Database, shared_simulator: Simulator, shared_brokerage: AlpacaBrokerage, run: Pipeline
) -> None:
    sym = ticker()
    shared_simulator.admin.set_price(sym, "100")
    resting = run("trading", sym, "buy", 10, order_type="limit", limit_price="80",
                  time_in_force="gtc")  # fmt: skip
    with pytest.raises(ReplaceRefused, match="max_order_notional"):
        replace_order(
            db, shared_brokerage, resting.id, ReplaceChanges(quantity=Decimal(5000)),
            requested_by="operator", limits=LIMITS,
        )  # fmt: skip
    assert row(db, resting.id).state == "ORDER_SENT"
    with db.unit_of_work() as uow:
        replacements = uow.session.scalars(
            select(Order).where(Order.replaces_order_id == resting.id)
        ).all()
    assert replacements == []


# -- reference prices ------------------------------------------------------------------------


def test_the_market_data_port_reads_the_simulators_latest_trade(
    shared_simulator: Simulator, market: AlpacaMarketData
) -> None:
    sym = ticker()
    shared_simulator.admin.set_price(sym, "123.45")
    assert market.latest_trade_price(sym) == Decimal("123.45")
    quote = market.latest_quote(sym)
    assert quote is not None and quote.bid is not None and quote.ask is not None
    assert (quote.bid + quote.ask) / 2 == Decimal("123.45")


def test_no_reference_price_rejects_a_market_order_and_a_price_passes_it(
    db: Database, shared_simulator: Simulator, run: Pipeline
) -> None:
    dark, lit = ticker(), ticker()
    shared_simulator.admin.set_faults(no_price=[dark])
    try:
        rejected = run("trading", dark, "buy", 10)
    finally:
        shared_simulator.admin.set_faults(no_price=[])
    assert rejected.state == "REJECTED"
    assert rejected.reason == f"max_order_notional: no reference price for {dark}"
    shared_simulator.admin.set_price(lit, "30")
    assert run("trading", lit, "buy", 10).state == "FULLY_FILLED"
    # 10,000 shares at 30 is 300,000: over the cap, with no earlier fill needed.
    too_big = run("trading", lit, "buy", 10_000)
    assert too_big.state == "REJECTED" and "notional 300,000.00 exceeds" in (too_big.reason or "")
