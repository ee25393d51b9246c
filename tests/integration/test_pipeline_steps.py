"""Pipeline steps on real Postgres, without Celery: each risk rule, the kill switch, malformed
and unknown input, and the ownership rules (one owner per ticker, priority and locks)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from core.risk import RiskLimits
from db.engine import Database
from db.kill_switch import set_kill_switch
from db.models import ConflictLog, EventRecord, Order, Strategy, TickerOwnership
from db.strategies import set_active
from service_layer.conflict_check import check_conflict
from service_layer.intake import intake
from service_layer.submission import begin_submit
from service_layer.validation import validate
from tests.fixtures.database import order_event_types
from tests.fixtures.keys import signed

LIMITS = RiskLimits(
    max_order_quantity=Decimal(10_000),
    max_order_notional=Decimal(250_000),
    max_open_orders=500,
    max_signals_per_minute=600,
)


def _raw(signal_id: str, **changes: Any) -> dict[str, Any]:
    raw = {
        "strategy": "trading",
        "signal_id": signal_id,
        "ticker": "AAPL",
        "side": "buy",
        "quantity": "10",
    }
    raw.update(changes)
    return raw


# A fixed market: the reference price of every ticker (None: no price can be had).
PRICE = Decimal(100)


def _run(
    db: Database, raw: Any, limits: RiskLimits = LIMITS, price: Decimal | None = PRICE
) -> Order:
    with db.unit_of_work() as uow:
        order_id = intake(uow.session, signed(db, raw), actor="test", message_id="m-1")
        assert order_id is not None
        uow.commit()
    for step in (
        lambda s: validate(s, order_id, limits, actor="test", reference_price=lambda _t: price),
        lambda s: check_conflict(s, order_id, actor="test"),
    ):
        with db.unit_of_work() as uow:
            step(uow.session)
            uow.commit()
    with db.unit_of_work() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        return order


def _configure(db: Database, name: str, **limits: Any) -> None:
    with db.unit_of_work() as uow:
        strategy = uow.session.scalar(select(Strategy).where(Strategy.name == name))
        assert strategy is not None
        strategy.config = {**strategy.config, "limits": limits}
        uow.commit()


def test_a_valid_buy_on_a_free_ticker_passes_and_claims_it(db: Database) -> None:
    order = _run(db, _raw("ok"))
    assert order.state == "ORDER_PENDING"
    assert order.conflict_check_passed is True
    with db.unit_of_work() as uow:
        owner = uow.session.scalar(select(TickerOwnership).where(TickerOwnership.ticker == "AAPL"))
        assert owner is not None and owner.strategy.name == "trading"
    assert "ownership_acquired" in [e for e in _all_types(db)]


def _all_types(db: Database) -> list[str]:
    with db.unit_of_work() as uow:
        return list(uow.session.scalars(select(EventRecord.type)))


@pytest.mark.parametrize(
    ("raw", "limits", "rule"),
    [
        (_raw("qty", quantity="20000"), LIMITS, "max_order_quantity"),
        (
            _raw("notional", quantity="5000", order_type="limit", limit_price="100"),
            LIMITS,
            "max_order_notional",
        ),
    ],
)
def test_a_limit_breach_is_rejected_with_its_rule_and_risk_event(
    db: Database, raw: dict[str, Any], limits: RiskLimits, rule: str
) -> None:
    order = _run(db, raw, limits)
    assert order.state == "REJECTED"
    assert order.reason is not None and order.reason.startswith(rule)
    assert {"signal_rejected", "risk_limit_exceeded"} <= set(order_event_types(db, order.id))


def test_open_orders_per_strategy_are_limited(db: Database) -> None:
    _configure(db, "trading", max_open_orders=1)
    assert _run(db, _raw("first")).state == "ORDER_PENDING"
    second = _run(db, _raw("second", ticker="MSFT"))
    assert second.state == "REJECTED" and "max_open_orders" in (second.reason or "")


def test_signals_per_minute_per_strategy_are_limited(db: Database) -> None:
    _configure(db, "aggressive", max_signals_per_minute=2)
    results = [
        _run(db, _raw(f"burst-{i}", strategy="aggressive", ticker=f"T{i}")).state for i in range(3)
    ]
    assert results[:2] == ["ORDER_PENDING", "ORDER_PENDING"]
    assert results[2] == "REJECTED"


def test_the_kill_switch_rejects_every_new_signal(db: Database) -> None:
    with db.unit_of_work() as uow:
        set_kill_switch(uow.session, True, "test", actor="test")
        uow.commit()
    order = _run(db, _raw("killed"))
    assert order.state == "REJECTED" and "kill switch" in (order.reason or "")


def test_an_inactive_strategy_is_rejected_and_its_locks_released(db: Database) -> None:
    assert _run(db, _raw("lt", strategy="long_term", ticker="NVDA")).state == "ORDER_PENDING"
    with db.unit_of_work() as uow:
        set_active(uow.session, "long_term", False, reason="test")
        uow.commit()
    with db.unit_of_work() as uow:
        live = uow.session.scalar(
            select(TickerOwnership).where(
                TickerOwnership.ticker == "NVDA", TickerOwnership.released_at.is_(None)
            )
        )
    assert live is None
    order = _run(db, _raw("lt2", strategy="long_term", ticker="NVDA"))
    assert order.state == "REJECTED" and "inactive" in (order.reason or "")


def test_an_unknown_strategy_is_recorded_and_rejected(db: Database) -> None:
    order = _run(db, _raw("ghost", strategy="ghost_strategy"))
    assert order.state == "REJECTED"
    assert "unknown strategy 'ghost_strategy'" in (order.reason or "")


@pytest.mark.parametrize(
    "raw",
    [
        _raw("neg", quantity="-5"),
        _raw("nan", quantity="NaN"),
        _raw("huge", quantity="1e30"),
        _raw("empty-ticker", ticker=""),
        _raw("odd-ticker", ticker="AAPL; DROP TABLE orders"),
        _raw("bad-side", side="hold"),
        _raw("wrong-type", quantity=[1, 2]),
        {"strategy": "trading", "signal_id": "missing-fields"},
        ["not", "an", "object"],
        "a string",
        None,
    ],
)
def test_malformed_signals_at_intake_are_rejected_with_the_reason(db: Database, raw: Any) -> None:
    with db.unit_of_work() as uow:
        order_id = intake(uow.session, raw, actor="test", message_id="bad-1")
        assert order_id is not None
        uow.commit()
    with db.unit_of_work() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        assert order.state == "REJECTED"
        assert (order.reason or "").startswith("malformed signal: ")
        assert "raw_signal" in order.order_metadata


def test_a_sell_beyond_the_own_position_is_rejected_after_the_ownership_decision(
    db: Database,
) -> None:
    assert _run(db, _raw("lt-buy", strategy="long_term", ticker="NVDA")).state == "ORDER_PENDING"
    # trading has no NVDA: this is a conflict first (blocked), not a missing position.
    blocked = _run(db, _raw("tr-sell", strategy="trading", ticker="NVDA", side="sell"))
    assert blocked.state == "REJECTED" and "insufficient priority" in (blocked.reason or "")
    # on a free ticker, a sell with no position is the long-only rule.
    short = _run(db, _raw("tr-short", ticker="ZZZ", side="sell"))
    assert short.state == "REJECTED" and "long-only" in (short.reason or "")
    with db.unit_of_work() as uow:
        logs = list(uow.session.scalars(select(ConflictLog)))
    assert [(c.ticker, c.resolution) for c in logs] == [("NVDA", "blocked")]
    assert all(c.reasoning.strip() for c in logs)


def test_an_owner_with_orders_in_flight_is_not_overridden(
    db: Database,
) -> None:
    assert _run(db, _raw("tr", ticker="TSLA")).state == "ORDER_PENDING"  # in flight
    override = _run(db, _raw("lt", strategy="long_term", ticker="TSLA", quantity="100"))
    assert override.state == "REJECTED"
    assert "in flight" in (override.reason or "")


def test_the_kill_switch_also_stops_orders_already_past_validation(db: Database) -> None:
    with db.unit_of_work() as uow:
        validating = intake(uow.session, signed(db, _raw("k-val")), actor="t", message_id="m")
        pending = intake(
            uow.session, signed(db, _raw("k-pend", ticker="MSFT")), actor="t", message_id="n"
        )
        assert validating is not None and pending is not None
        uow.commit()
    with db.unit_of_work() as uow:
        validate(uow.session, validating, LIMITS, actor="t", reference_price=lambda _t: PRICE)
        validate(uow.session, pending, LIMITS, actor="t", reference_price=lambda _t: PRICE)
        check_conflict(uow.session, pending, actor="t")
        set_kill_switch(uow.session, True, "halt", actor="t")
        uow.commit()
    with db.unit_of_work() as uow:
        check_conflict(uow.session, validating, actor="t")
        assert begin_submit(uow.session, pending) is None
        uow.commit()
    with db.unit_of_work() as uow:
        states = {o.id: o.state for o in uow.session.scalars(select(Order))}
        claims = uow.session.scalars(
            select(TickerOwnership).where(TickerOwnership.released_at.is_(None))
        ).all()
    assert states == {validating: "REJECTED", pending: "CANCELLED"}
    assert claims == []  # the cancelled order's claim went back


def test_a_market_order_without_a_reference_price_is_rejected_not_passed(db: Database) -> None:
    order = _run(db, _raw("no-price", quantity="10000"), price=None)
    assert order.state == "REJECTED"
    assert order.reason == "max_order_notional: no reference price for AAPL"


def test_a_market_order_is_judged_at_the_reference_price(db: Database) -> None:
    # 10,000 shares at 100 is 1,000,000: over the 250,000 cap although no fill was ever seen.
    order = _run(db, _raw("big", quantity="10000"))
    assert order.state == "REJECTED"
    assert order.reason is not None and "notional 1,000,000.00 exceeds" in order.reason
    assert _run(db, _raw("small", quantity="100")).state == "ORDER_PENDING"


def test_a_limit_order_needs_no_reference_price(db: Database) -> None:
    order = _run(db, _raw("limit", order_type="limit", limit_price="50"), price=None)
    assert order.state == "ORDER_PENDING"


def test_a_stop_order_is_judged_at_its_stop_or_the_market_whichever_is_higher(
    db: Database,
) -> None:
    stop = {"order_type": "stop", "stop_price": "30", "quantity": "3000"}
    # 3,000 at the market's 90 is 270,000: over the cap, although 3,000 at 30 is not.
    assert _run(db, _raw("stop-high", **stop), price=Decimal(90)).state == "REJECTED"
    # Without a market price the stop's own price is the one it trades near.
    assert _run(db, _raw("stop-no-market", **stop), price=None).state == "ORDER_PENDING"
