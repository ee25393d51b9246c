"""Notifications on real Postgres, sent through Apprise to a local webhook: one delivery per
(rule, event), messages in words, digests, failures recorded, default rules from the
environment; and the report's figures against the database."""

from __future__ import annotations

import socket
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text

from adapters.notifier import AppriseNotifier
from arbiter.report_render import to_html, to_markdown
from core.brokerage import BrokerOrder, Side
from core.errors import NotificationFailed
from core.event_payloads import OrderTransitioned
from core.events import Event, EventType
from core.risk import RiskLimits
from core.states import OrderState, TransitionCause
from db import notifications as store
from db.engine import Database
from db.models import NotificationDelivery, Order
from db.order_manager import OrderManager
from db.outbox import emit
from service_layer import notifications
from service_layer.conflict_check import check_conflict
from service_layer.intake import intake
from service_layer.reports import build_report
from service_layer.settlement import settle
from service_layer.validation import validate
from tests.fixtures.keys import signed
from tests.fixtures.receiver import Receiver

LIMITS = RiskLimits(
    max_order_quantity=Decimal(10_000),
    max_order_notional=Decimal(250_000),
    max_open_orders=500,
    max_signals_per_minute=600,
)
NOTIFIER = AppriseNotifier(timeout_s=3)
ZERO = Decimal(0)


def _signal(db: Database, strategy: str, signal_id: str, ticker: str, side: str, qty: str) -> int:
    raw = {"strategy": strategy, "signal_id": signal_id, "ticker": ticker, "side": side,
           "quantity": qty, "order_type": "limit", "limit_price": "100"}  # fmt: skip
    with db.unit_of_work() as uow:
        order_id = intake(uow.session, signed(db, raw), actor="test", message_id=signal_id)
        assert order_id is not None
        uow.commit()
    for step in (
        lambda s: validate(s, order_id, LIMITS, actor="test"),
        lambda s: check_conflict(s, order_id, actor="test"),
    ):
        with db.unit_of_work() as uow:
            step(uow.session)
            uow.commit()
    return order_id


def _rule(db: Database, events: list[str], url: str, **filters: Any) -> int:
    with db.unit_of_work() as uow:
        rule = store.add_rule(uow.session, events, url, **filters)
        uow.commit()
        return rule.id


def _dispatch(db: Database, env_urls: list[str] | None = None, digest_after: int = 5) -> Any:
    return notifications.dispatch(
        db, env_urls or [], digest_after=digest_after, pending_after_s=3600, sending_after_s=3600
    )


def _deliver_all(db: Database, ids: list[int], last_attempt: bool = False) -> list[str]:
    return [
        notifications.deliver(db, NOTIFIER, i, last_attempt=last_attempt, sending_after_s=3600)
        for i in ids
    ]


def _deliveries(db: Database) -> list[NotificationDelivery]:
    with db.sessions() as session:
        return list(session.scalars(select(NotificationDelivery).order_by(NotificationDelivery.id)))


def test_a_blocked_sell_reaches_the_webhook_once_with_its_reasoning(
    db: Database, receiver: Receiver
) -> None:
    _rule(db, ["order_blocked_by_conflict"], receiver.url)
    _signal(db, "long_term", "lt-1", "NVDA", "buy", "100")
    _signal(db, "trading", "tr-1", "NVDA", "sell", "10")

    first = _dispatch(db)
    assert len(first.new) == 1
    assert _deliver_all(db, first.new) == ["sent"]
    again = _dispatch(db)  # the events past the cursor are read again: nothing new
    assert again.new == [] and again.lost == []
    assert _deliver_all(db, first.new) == ["skipped"]  # a redelivered task sends nothing

    [body] = receiver.bodies()
    assert body.startswith(
        "trading's sell of 10 NVDA was blocked: long_term (priority 100) owns NVDA, locked until"
    )
    assert "Reasoning:" in body and "priority" in body
    [row] = _deliveries(db)
    assert (row.status, row.attempts, row.event_type) == ("sent", 1, "order_blocked_by_conflict")


def test_rules_filter_by_strategy_and_ticker(db: Database, receiver: Receiver) -> None:
    _rule(db, ["ownership_acquired"], receiver.url, ticker="AAPL")
    _rule(db, ["ownership_acquired"], receiver.url, strategy="dividend")
    _signal(db, "long_term", "lt-a", "AAPL", "buy", "1")
    _signal(db, "dividend", "dv-m", "MSFT", "buy", "1")
    _signal(db, "trading", "tr-t", "TSLA", "buy", "1")
    result = _dispatch(db)
    assert len(result.new) == 2
    _deliver_all(db, result.new)
    assert sorted(b.split(":")[0] for b in receiver.bodies()) == [
        "ownership acquired (dividend MSFT)",
        "ownership acquired (long_term AAPL)",
    ]


def test_past_the_allowance_messages_wait_for_one_digest(db: Database, receiver: Receiver) -> None:
    _rule(db, ["risk_alert"], receiver.url)
    with db.unit_of_work() as uow:
        for i in range(8):
            emit(uow.session, Event(type=EventType.RISK_ALERT, source="risk-bot",
                                    payload={"alert": f"drawdown {i}"}))  # fmt: skip
        uow.commit()
    result = _dispatch(db, digest_after=3)
    assert (len(result.new), result.held) == (3, 5)
    _deliver_all(db, result.new)
    assert notifications.send_digests(db, NOTIFIER) == 0  # the minute is not over yet
    assert notifications.send_digests(db, NOTIFIER, older_than_s=0) == 1
    assert notifications.send_digests(db, NOTIFIER, older_than_s=0) == 0
    assert len(receiver.messages) == 4
    digest_message = receiver.messages[-1]
    assert digest_message["title"] == "Arbiter: 5 notifications in the last 1 min"
    assert digest_message["message"].count("drawdown") == 5
    rows = _deliveries(db)
    assert [r.status for r in rows] == ["sent"] * 8
    assert [r.in_digest for r in rows] == [False] * 3 + [True] * 5


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_dead_target_is_retried_then_recorded_failed(db: Database) -> None:
    _rule(db, ["risk_alert"], f"json://127.0.0.1:{_closed_port()}/hook")
    with db.unit_of_work() as uow:
        emit(uow.session, Event(type=EventType.RISK_ALERT, source="bot", payload={"a": 1}))
        uow.commit()
    [delivery] = _dispatch(db).new
    with pytest.raises(NotificationFailed) as failure:
        _deliver_all(db, [delivery])
    assert "json://127.0.0.1" in str(failure.value) and "/hook" not in str(failure.value)
    assert _deliveries(db)[0].status == "pending"
    assert _deliver_all(db, [delivery], last_attempt=True) == ["failed"]
    with db.sessions() as session:
        [failed] = store.list_deliveries(session, failed_only=True)
    assert (failed.id, failed.attempts) == (delivery, 2)
    assert failed.last_error and "/hook" not in failed.last_error


def test_a_refusing_target_is_a_failure_too(db: Database, receiver: Receiver) -> None:
    receiver.status = 500
    _rule(db, ["risk_alert"], receiver.url)
    with db.unit_of_work() as uow:
        emit(uow.session, Event(type=EventType.RISK_ALERT, source="bot", payload={"a": 1}))
        uow.commit()
    [delivery] = _dispatch(db).new
    with pytest.raises(NotificationFailed):
        _deliver_all(db, [delivery])
    receiver.status = 200
    assert _deliver_all(db, [delivery]) == ["sent"]
    assert receiver.attempts == 2 and len(receiver.messages) == 1


def test_env_urls_give_default_rules_until_an_operator_adds_one(
    db: Database, receiver: Receiver
) -> None:
    with db.unit_of_work() as uow:
        emit(uow.session, Event(type=EventType.KILL_SWITCH_ACTIVATED, source="cli",
                                payload={"reason": "drill"}))  # fmt: skip
        uow.commit()
    # The first rule appears only now: the dispatcher starts at the end of the history.
    assert _dispatch(db, [receiver.url]).new == []
    with db.unit_of_work() as uow:
        emit(uow.session, Event(type=EventType.KILL_SWITCH_ACTIVATED, source="cli",
                                payload={"reason": "drill 2"}))  # fmt: skip
        filled = OrderTransitioned(
            from_state=OrderState.ORDER_SENT, to_state=OrderState.FULLY_FILLED, reason=None,
            filled_quantity=Decimal(1), avg_fill_price=Decimal(1),
            cause=TransitionCause.BROKERAGE_REPORT)
        emit(uow.session, Event.of(EventType.ORDER_FILLED, filled, source="x"))
        uow.commit()
    result = _dispatch(db, [receiver.url])
    assert len(result.new) == 1  # the kill switch, not the fill
    _deliver_all(db, result.new)
    assert receiver.bodies() == [
        "The kill switch is ON: no new orders are accepted.\nReason: drill 2"
    ]

    operator_rule = _rule(db, ["order_filled"], receiver.url)
    with db.sessions() as session:
        assert [r.id for r in store.active_rules(session, [receiver.url])] == [operator_rule]


def _fill(db: Database, order_id: int, price: str) -> None:
    """The brokerage reports the order filled, booked by the real settlement code."""
    with db.unit_of_work() as uow:
        order = OrderManager(uow.session).lock(order_id)
        assert order.state == "ORDER_PENDING", order.last_reason
        report = BrokerOrder(
            brokerage_order_id=f"b-{order_id}", client_order_id=order.client_order_id,
            symbol=order.ticker or "", side=Side(order.side), quantity=order.quantity or ZERO,
            status="filled", filled_quantity=order.quantity or ZERO,
            avg_fill_price=Decimal(price),
        )  # fmt: skip
        settle(uow.session, order, report, actor="test")
        uow.commit()


def test_the_report_matches_the_database(db: Database) -> None:
    _fill(db, _signal(db, "long_term", "lt-1", "NVDA", "buy", "100"), "100")
    _signal(db, "trading", "tr-1", "NVDA", "sell", "10")  # blocked: locked 90 days
    _fill(db, _signal(db, "trading", "tr-2", "TSLA", "buy", "10"), "200")
    _fill(db, _signal(db, "long_term", "lt-2", "TSLA", "buy", "100"), "210")  # override
    _signal(db, "aggressive", "ag-1", "NVDA", "buy", "5")  # blocked
    _fill(db, _signal(db, "long_term", "lt-3", "NVDA", "sell", "50"), "110")  # realises 500
    report = build_report(db, since_days=7)

    with db.sessions() as session:
        conflicts = dict(
            session.execute(
                text(
                    "SELECT resolution, count(*) FROM conflict_logs "
                    "WHERE requesting_strategy_id <> owning_strategy_id GROUP BY 1"
                )
            ).all()
        )
        orders = session.scalar(select(func.count()).select_from(Order))
        realised = dict(
            session.execute(
                text(
                    "SELECT s.name, sum(p.realized_pnl) FROM positions p "
                    "JOIN strategies s ON s.id = p.strategy_id GROUP BY 1"
                )
            ).all()
        )
    by = {r["strategy"]: r for r in report["conflicts_by_strategy"]}
    assert sum(r["blocked"] for r in by.values()) == conflicts["blocked"] == 2
    assert sum(r["priority_override"] for r in by.values()) == conflicts["priority_override"] == 1
    assert by["trading"]["blocked"] == 1 and by["aggressive"]["blocked"] == 1
    assert by["long_term"]["priority_override"] == 1
    assert report["contested_tickers"][0] == {
        "ticker": "NVDA", "conflicts": 2, "strategies": 3, "blocked": 2, "overrides": 0
    }  # fmt: skip
    assert sum(r["total"] for r in report["orders_by_strategy"]) == orders
    [override] = report["overrides"]
    assert (override["from_strategy"], override["to_strategy"], override["ticker"]) == (
        "trading", "long_term", "TSLA"
    )  # fmt: skip
    assert override["position_moved"] == "10"
    assert {b["strategy"] for b in report["blocked"]} == {"trading", "aggressive"}
    assert all(b["reasoning"] for b in report["blocked"])

    pnl = {r["strategy"]: r for r in report["pnl"]}
    assert Decimal(pnl["long_term"]["realised"]) == realised["long_term"] == Decimal(500)
    # 50 NVDA at cost 100 valued at the last fill (110); 110 TSLA at cost ~209.09 at 210.
    assert Decimal(pnl["long_term"]["unrealised"]) == Decimal("600.00")
    assert pnl["long_term"]["transferred_in_quantity"] == "10"
    assert pnl["long_term"]["transferred_in_cost"] == "2000.00"
    [point] = report["equity"]["long_term"]
    assert point["realised"] == "500.00"
    fills = {r["strategy"]: r for r in report["fills_by_strategy"]}
    assert fills["long_term"]["fills"] == 3 and fills["trading"]["fills"] == 1

    page = to_html(report)
    assert page.count("<svg") == 3  # conflicts, contested tickers, realised P&L over time
    assert "long_term" in page and "<script" not in page
    assert "| trading | 1 | 0 | 0 | 1 |" in to_markdown(report)
