"""The operator CLI against a real Postgres (and Redis for `submit`)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from arbiter.commands.registry import register
from core.settings import get_settings
from core.signals import Signal, client_order_id_for
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.models import (
    ConflictLog,
    EventRecord,
    Order,
    OrderTransition,
    Position,
    ReviewItem,
    TickerOwnership,
)
from db.order_manager import OrderManager
from db.strategies import require_strategy
from tests.fixtures.simulator import Simulator

S = OrderState
Invoke = Callable[..., Result]

ORDER_KEYS = {
    "id", "client_order_id", "strategy", "signal_id", "ticker", "side", "quantity", "state",
    "filled_quantity", "avg_fill_price", "needs_manual_review", "reason", "brokerage_order_id",
    "order_type", "limit_price", "created_at", "updated_at",
}  # fmt: skip


def make_root() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


@pytest.fixture(autouse=True)
def _fresh_settings() -> Any:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def cli(db: Database, migrated_database_url: str) -> Invoke:
    """Run `arbiter ...` in-process against this run's clean database; no Redis configured."""
    root = make_root()
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str | None] | None = None, **kw: Any) -> Result:
        full_env = {
            "ARBITER_DATABASE_URL": migrated_database_url,
            "ARBITER_REDIS_URL": None,
            **(env or {}),
        }
        return runner.invoke(root, list(args), env=full_env, catch_exceptions=False, **kw)

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def make_order(
    db: Database,
    signal_id: str,
    *,
    strategy: str = "long_term",
    ticker: str = "AAPL",
    side: str = "buy",
    quantity: str = "10",
    path: Iterable[OrderState] = (),
) -> int:
    """An order created as intake would, then moved along `path` by the OrderManager."""
    with db.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        signal = Signal.parse(
            {"strategy": strategy, "signal_id": signal_id, "ticker": ticker, "side": side,
             "quantity": quantity}
        )  # fmt: skip
        order, _ = manager.create_from_signal(
            signal, require_strategy(uow.session, strategy), actor="test"
        )
        for state in path:
            manager.transition(order, state, reason=f"test: {state.value}", actor="test",
                cause=TransitionCause.OPERATOR)
        uow.commit()
        return order.id


def own(db: Database, ticker: str, strategy: str, *, locked_days: int | None = None) -> None:
    with db.unit_of_work() as uow:
        owner = require_strategy(uow.session, strategy)
        locked = datetime.now(UTC) + timedelta(days=locked_days) if locked_days else None
        uow.session.add(TickerOwnership(ticker=ticker, strategy_id=owner.id, locked_until=locked))
        uow.commit()


def event_types(db: Database) -> list[str]:
    with db.unit_of_work() as uow:
        return list(uow.session.scalars(select(EventRecord.type).order_by(EventRecord.seq)))


# -- configuration ---------------------------------------------------------------------------


def test_unconfigured_database_exits_2_with_a_clear_message(cli: Invoke) -> None:
    result = cli("orders", env={"ARBITER_DATABASE_URL": None})
    assert result.exit_code == 2
    assert "no database configured: run `arbiter up` (embedded) or set ARBITER_DATABASE_URL" in (
        result.output
    )
    assert "Traceback" not in result.output


# -- db --------------------------------------------------------------------------------------


def test_db_upgrade_twice_is_idempotent_and_leaves_four_strategies(cli: Invoke) -> None:
    first = ok(cli("db", "upgrade"))
    second = ok(cli("db", "upgrade"))
    assert "schema already at" in second.output
    assert "default strategies present" in first.output + second.output
    names = [s["name"] for s in as_json(cli("strategies", "list", "--json"))]
    assert names == ["long_term", "dividend", "trading", "aggressive"]


def test_db_downgrade_asks_first_and_upgrade_restores(cli: Invoke, db: Database) -> None:
    refused = cli("db", "downgrade", input="n\n")
    assert refused.exit_code == 1
    assert len(as_json(cli("strategies", "list", "--json"))) == 4

    ok(cli("db", "downgrade", "base", "--yes"))
    ok(cli("db", "upgrade"))
    assert len(as_json(cli("strategies", "list", "--json"))) == 4


# -- strategies ------------------------------------------------------------------------------


def test_strategies_list_json_carries_the_seeded_defaults(cli: Invoke) -> None:
    rows = {s["name"]: s for s in as_json(cli("strategies", "list", "--json"))}
    assert rows["long_term"] == {
        "name": "long_term",
        "display_name": "Long-term",
        "priority": 100,
        "horizon": "long",
        "active": True,
        "lock_days": 90,
        "limits": None,
        "config": {"ownership_lock_days": 90},
    }
    assert rows["dividend"]["lock_days"] == 365
    assert rows["trading"]["lock_days"] == 0
    assert "long_term" in ok(cli("strategies", "list")).output


def test_strategies_add_and_change_priority(cli: Invoke) -> None:
    ok(
        cli("strategies", "add", "swing", "--priority", "70", "--horizon", "medium",
            "--display-name", "Swing", "--lock-days", "7",
            "--limits", '{"max_order_quantity": 500}')
    )  # fmt: skip
    ok(cli("strategies", "priority", "swing", "20"))
    rows = {s["name"]: s for s in as_json(cli("strategies", "list", "--json"))}
    assert rows["swing"]["priority"] == 20
    assert rows["swing"]["horizon"] == "medium"
    assert rows["swing"]["display_name"] == "Swing"
    assert rows["swing"]["limits"] == {"max_order_quantity": 500}
    assert rows["swing"]["config"] == {
        "ownership_lock_days": 7,
        "limits": {"max_order_quantity": 500},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "long_term", "--priority", "1", "--horizon", "long"], "already exists"),
        (["add", "Bad-Name", "--priority", "1", "--horizon", "long"], "strategy name"),
        (["add", "x", "--priority", "1", "--horizon", "short", "--limits", "{"], "not JSON"),
        (["add", "x", "--priority", "1", "--horizon", "short", "--limits", '{"max_qty": 1}'],
         "unknown limit"),
        (["add", "x", "--priority", "1", "--horizon", "short",
          "--limits", '{"max_order_quantity": -5}'], "greater than 0"),
        # Issue 13 (6): these were stored, then raised inside validate on every signal.
        (["add", "x", "--priority", "1", "--horizon", "short",
          "--limits", '{"max_open_orders": "1e3"}'], "max_open_orders"),
        (["add", "x", "--priority", "1", "--horizon", "short", "--lock-days", "1e10"],
         "ownership_lock_days"),
        (["priority", "nobody", "5"], "unknown strategy"),
        (["deactivate", "nobody"], "unknown strategy"),
    ],
)  # fmt: skip
def test_strategies_bad_input_exits_2_writing_nothing(
    cli: Invoke, args: list[str], message: str
) -> None:
    result = cli("strategies", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(as_json(cli("strategies", "list", "--json"))) == 4


def test_deactivate_releases_the_strategys_tickers_and_activate_restores(
    cli: Invoke, db: Database
) -> None:
    own(db, "TSLA", "trading")
    own(db, "AMD", "trading")
    own(db, "NVDA", "long_term", locked_days=90)

    result = ok(cli("strategies", "deactivate", "trading"))
    assert "released tickers: AMD, TSLA" in result.output
    owners = {o["ticker"]: o["strategy"] for o in as_json(cli("ownership", "--json"))}
    assert owners == {"NVDA": "long_term"}
    rows = {s["name"]: s for s in as_json(cli("strategies", "list", "--json"))}
    assert rows["trading"]["active"] is False
    assert "strategy_deactivated" in event_types(db)
    assert event_types(db).count("ownership_released") == 2

    assert "already inactive" in ok(cli("strategies", "deactivate", "trading")).output
    ok(cli("strategies", "activate", "trading"))
    rows = {s["name"]: s for s in as_json(cli("strategies", "list", "--json"))}
    assert rows["trading"]["active"] is True
    assert "strategy_activated" in event_types(db)


# -- submit ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["long_term", "AAPL", "buy", "abc"], "quantity"),
        (["long_term", "AAPL", "buy", "-5"], "quantity"),
        (["long_term", "AAPL", "buy", "NaN"], "quantity"),
        (["long_term", "AAPL", "hold", "5"], "side"),
        (["long_term", "A@PL", "buy", "5"], "ticker"),
        (["Long Term", "AAPL", "buy", "5"], "strategy"),
        (["long_term", "AAPL", "buy", "5", "--type", "limit"], "limit_price"),
    ],
)
def test_submit_malformed_signal_exits_2_naming_the_field(
    cli: Invoke, redis_url: str, args: list[str], field: str
) -> None:
    with redis.Redis.from_url(redis_url) as client:
        before = client.llen("signals")
        result = cli("submit", *args, env={"ARBITER_REDIS_URL": redis_url})
        assert result.exit_code == 2
        assert f"error: {field}:" in result.output
        assert client.llen("signals") == before  # nothing enqueued


def test_submit_without_redis_exits_2_with_a_clear_message(cli: Invoke) -> None:
    result = cli("submit", "long_term", "AAPL", "buy", "5")
    assert result.exit_code == 2
    assert "no Redis configured" in result.output


def _queued_signal_ids(client: redis.Redis) -> set[str]:
    ids = set()
    for raw in client.lrange("signals", 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        ids.add(body[0][0]["signal_id"])
    return ids


def test_submit_enqueues_and_prints_the_client_order_id(
    cli: Invoke, db: Database, redis_url: str
) -> None:
    result = cli(
        "submit", "long_term", "aapl", "buy", "10", "--signal-id", "cli-1", "--json",
        env={"ARBITER_REDIS_URL": redis_url},
    )  # fmt: skip
    coid = client_order_id_for("long_term", "cli-1")
    assert as_json(result) == {"client_order_id": coid, "signal_id": "cli-1"}

    def arrived() -> bool:  # queued, or already taken by a worker this run started
        with redis.Redis.from_url(redis_url) as client, db.unit_of_work() as uow:
            if "cli-1" in _queued_signal_ids(client):
                return True
            return (
                uow.session.scalar(select(Order).where(Order.client_order_id == coid)) is not None
            )

    deadline = time.monotonic() + 10
    while not arrived():
        assert time.monotonic() < deadline, "the signal never reached the queue"
        time.sleep(0.1)


# -- orders ----------------------------------------------------------------------------------


def test_orders_json_has_the_contract_keys_and_filters(cli: Invoke, db: Database) -> None:
    first = make_order(db, "o-1", ticker="AAPL")
    make_order(db, "o-2", strategy="trading", ticker="NVDA", side="sell", quantity="2.5",
               path=[S.VALIDATING, S.REJECTED])  # fmt: skip
    third = make_order(db, "o-3", strategy="trading", ticker="AAPL")
    with db.unit_of_work() as uow:
        OrderManager(uow.session).flag_for_review(third, "cancel race", actor="test")
        uow.commit()

    rows = as_json(cli("orders", "--json"))
    assert [r["id"] for r in rows] == [third, first + 1, first]
    assert all(set(r) >= ORDER_KEYS for r in rows)
    rejected = as_json(cli("orders", "--state", "rejected", "--json"))
    assert len(rejected) == 1
    assert rejected[0]["state"] == "REJECTED"
    assert rejected[0]["quantity"] == "2.5"
    assert rejected[0]["reason"] == "test: REJECTED"
    assert rejected[0]["side"] == "sell"
    assert {r["id"] for r in as_json(cli("orders", "--strategy", "trading", "--json"))} == {
        first + 1,
        third,
    }
    assert {r["id"] for r in as_json(cli("orders", "--ticker", "aapl", "--json"))} == {first, third}
    review = as_json(cli("orders", "--review", "--json"))
    assert [(r["id"], r["needs_manual_review"]) for r in review] == [(third, True)]
    assert len(as_json(cli("orders", "--limit", "1", "--json"))) == 1
    assert "NVDA" in ok(cli("orders")).output


def test_orders_invalid_state_lists_the_valid_ones(cli: Invoke) -> None:
    result = cli("orders", "--state", "DONE")
    assert result.exit_code == 2
    assert "unknown state 'DONE'" in result.output
    assert "SIGNAL_RECEIVED" in result.output
    assert "FULLY_FILLED" in result.output


def test_orders_show_has_audit_trail_and_events(cli: Invoke, db: Database) -> None:
    order_id = make_order(db, "show-1", path=[S.VALIDATING, S.REJECTED])
    coid = client_order_id_for("long_term", "show-1")

    shown = as_json(cli("orders", "show", str(order_id), "--json"))
    assert as_json(cli("orders", "show", coid, "--json"))["id"] == order_id
    assert shown["client_order_id"] == coid
    assert [(t["from"], t["to"], t["actor"]) for t in shown["transitions"]] == [
        ("IDLE", "SIGNAL_RECEIVED", "test"),
        ("SIGNAL_RECEIVED", "VALIDATING", "test"),
        ("VALIDATING", "REJECTED", "test"),
    ]
    assert shown["transitions"][-1]["reason"] == "test: REJECTED"
    assert shown["fills"] == []
    seqs = [e["seq"] for e in shown["events"]]
    assert seqs == sorted(seqs)
    assert "signal_received" in [e["type"] for e in shown["events"]]
    assert "audit trail" in ok(cli("orders", "show", str(order_id))).output

    missing = cli("orders", "show", "999999")
    assert missing.exit_code == 2
    assert "no order '999999'" in missing.output


# -- ownership -------------------------------------------------------------------------------


def test_ownership_lists_live_owners_and_release_frees_one(cli: Invoke, db: Database) -> None:
    own(db, "NVDA", "long_term", locked_days=90)
    own(db, "TSLA", "trading")

    rows = as_json(cli("ownership", "--json"))
    assert [(r["ticker"], r["strategy"], r["locked"]) for r in rows] == [
        ("NVDA", "long_term", True),
        ("TSLA", "trading", False),
    ]
    assert all({"ticker", "strategy", "locked_until", "acquired_at"} <= set(r) for r in rows)
    assert rows[1]["locked_until"] is None

    result = ok(cli("ownership", "release", "nvda", "--reason", "operator override"))
    assert "released NVDA from long_term" in result.output
    assert [r["ticker"] for r in as_json(cli("ownership", "--json"))] == ["TSLA"]
    history = {r["ticker"]: r for r in as_json(cli("ownership", "--history", "--json"))}
    assert history["NVDA"]["release_reason"] == "operator override"
    assert history["NVDA"]["released_at"] is not None
    assert "ownership_released" in event_types(db)


@pytest.mark.parametrize(
    ("ticker", "message"), [("AMZN", "AMZN has no owner"), ("a b!", "not a ticker")]
)
def test_ownership_release_of_unowned_or_bad_ticker_exits_2(
    cli: Invoke, db: Database, ticker: str, message: str
) -> None:
    result = cli("ownership", "release", ticker)
    assert result.exit_code == 2
    assert message in result.output
    assert "ownership_released" not in event_types(db)


# -- conflicts and positions -----------------------------------------------------------------


def test_conflicts_json_has_the_contract_keys(cli: Invoke, db: Database) -> None:
    order_id = make_order(db, "c-1", strategy="trading", ticker="NVDA", side="sell")
    with db.unit_of_work() as uow:
        trading = require_strategy(uow.session, "trading")
        long_term = require_strategy(uow.session, "long_term")
        uow.session.add(
            ConflictLog(
                order_id=order_id, ticker="NVDA", requesting_strategy_id=trading.id,
                owning_strategy_id=long_term.id, requesting_priority=50, owning_priority=100,
                action="sell", resolution="blocked",
                reasoning="trading (50) < long_term (100): insufficient priority",
            )
        )  # fmt: skip
        uow.commit()

    rows = as_json(cli("conflicts", "--json"))
    assert len(rows) == 1
    row = rows[0]
    assert {k: row[k] for k in row if k not in {"id", "created_at"}} == {
        "ticker": "NVDA",
        "requesting_strategy": "trading",
        "owning_strategy": "long_term",
        "requesting_priority": 50,
        "owning_priority": 100,
        "action": "sell",
        "resolution": "blocked",
        "reasoning": "trading (50) < long_term (100): insufficient priority",
        "order_id": order_id,
    }
    datetime.fromisoformat(row["created_at"])
    assert as_json(cli("conflicts", "--ticker", "TSLA", "--json")) == []
    assert "NVDA" in ok(cli("conflicts")).output


def test_positions_hide_zero_rows_unless_all(cli: Invoke, db: Database) -> None:
    with db.unit_of_work() as uow:
        long_term = require_strategy(uow.session, "long_term")
        trading = require_strategy(uow.session, "trading")
        uow.session.add_all(
            [
                Position(strategy_id=long_term.id, ticker="AAPL", quantity=Decimal("100"),
                         avg_cost=Decimal("187.5"), realized_pnl=Decimal("0")),
                Position(strategy_id=trading.id, ticker="TSLA", quantity=Decimal("0"),
                         avg_cost=Decimal("0"), realized_pnl=Decimal("-12.25")),
            ]
        )  # fmt: skip
        uow.commit()

    rows = as_json(cli("positions", "--json"))
    assert [(r["strategy"], r["ticker"]) for r in rows] == [("long_term", "AAPL")]
    assert set(rows[0]) == {"strategy", "ticker", "quantity", "avg_cost", "realized_pnl",
                            "updated_at"}  # fmt: skip
    assert Decimal(rows[0]["quantity"]) == 100
    assert Decimal(rows[0]["avg_cost"]) == Decimal("187.5")
    every = as_json(cli("positions", "--all", "--json"))
    assert [r["ticker"] for r in every] == ["AAPL", "TSLA"]
    assert Decimal(every[1]["realized_pnl"]) == Decimal("-12.25")
    assert (
        as_json(cli("positions", "--all", "--strategy", "trading", "--json"))[0]["ticker"] == "TSLA"
    )
    unknown = cli("positions", "--strategy", "nobody")
    assert unknown.exit_code == 2
    assert "unknown strategy 'nobody'" in unknown.output


# -- kill switch -----------------------------------------------------------------------------


def test_kill_switch_on_off_status_and_cancel_open(cli: Invoke, db: Database) -> None:
    assert as_json(cli("kill-switch", "status", "--json"))["on"] is False
    received = make_order(db, "k-1")
    sent = make_order(db, "k-2", path=[S.VALIDATING, S.ORDER_PENDING, S.ORDER_SENT])

    result = ok(cli("kill-switch", "on", "--reason", "market halt", "--cancel-open"))
    assert "cancelled 1 orders in SIGNAL_RECEIVED" in result.output
    assert "asked the brokerage to cancel 0 live orders" in result.output
    status = as_json(cli("kill-switch", "status", "--json"))
    assert (status["on"], status["reason"], status["by"]) == (True, "market halt", "cli")
    datetime.fromisoformat(status["at"])
    states = {r["id"]: r["state"] for r in as_json(cli("orders", "--json"))}
    assert states == {received: "CANCELLED", sent: "ORDER_SENT"}
    with db.unit_of_work() as uow:
        last = uow.session.scalars(
            select(OrderTransition)
            .where(OrderTransition.order_id == received)
            .order_by(OrderTransition.id.desc())
        ).first()
        assert last is not None
        assert (last.to_state, last.actor, last.reason) == (
            "CANCELLED",
            "cli",
            "kill switch: market halt",
        )

    ok(cli("kill-switch", "off", "--reason", "halt lifted"))
    assert as_json(cli("kill-switch", "status", "--json"))["on"] is False
    assert "kill switch: off" in ok(cli("kill-switch", "status")).output
    types = event_types(db)
    assert types.index("kill_switch_activated") < types.index("kill_switch_deactivated")


def test_kill_switch_cancel_open_cancels_live_orders_at_the_brokerage(
    cli: Invoke, db: Database, simulator: Simulator
) -> None:
    from core.brokerage import OrderRequest, OrderType, Side
    from service_layer.reconciliation import reconcile_open_orders

    brokerage = simulator.brokerage()
    order_id = make_order(db, "k-live", path=[S.VALIDATING, S.ORDER_PENDING])
    with db.unit_of_work() as uow:
        order = OrderManager(uow.session).lock(order_id)
        live = brokerage.submit(
            OrderRequest(
                order.client_order_id,
                "AAPL",
                Side.BUY,
                Decimal(10),
                OrderType.LIMIT,
                Decimal("0.01"),
            )
        )  # a bid far below the market: it stays open
        OrderManager(uow.session).transition(
            order,
            S.ORDER_SENT,
            reason="sent",
            actor="test", cause=TransitionCause.OPERATOR,
            brokerage_order_id=live.brokerage_order_id,
        )
        uow.commit()
    env = {"ARBITER_BROKERAGE_URL": simulator.url}
    result = ok(cli("kill-switch", "on", "--cancel-open", env=env))
    assert "asked the brokerage to cancel 1 live orders" in result.output
    assert simulator.admin.orders(order.client_order_id)[0]["status"] == "canceled"
    reconcile_open_orders(db, brokerage, never_received_grace_s=60)
    states = {r["id"]: r["state"] for r in as_json(cli("orders", "--json"))}
    assert states[order_id] == "CANCELLED"


# -- review ----------------------------------------------------------------------------------


def _review_items(db: Database) -> list[ReviewItem]:
    with db.unit_of_work() as uow:
        return list(uow.session.scalars(select(ReviewItem).order_by(ReviewItem.id)))


def test_review_list_and_resolve_an_order_item(cli: Invoke, db: Database) -> None:
    order_id = make_order(db, "r-1", ticker="MSFT")
    with db.unit_of_work() as uow:
        OrderManager(uow.session).flag_for_review(order_id, "fill after cancel", actor="test")
        uow.commit()

    rows = as_json(cli("review", "list", "--json"))
    assert len(rows) == 1
    item = rows[0]
    assert {k: item[k] for k in ("kind", "order_id", "client_order_id", "ticker", "reason")} == {
        "kind": "order",
        "order_id": order_id,
        "client_order_id": client_order_id_for("long_term", "r-1"),
        "ticker": "MSFT",
        "reason": "fill after cancel",
    }

    with db.unit_of_work() as uow:
        transitions_before = uow.session.scalar(select(func.count()).select_from(OrderTransition))
    bad = cli("review", "resolve", str(item["id"]), "--note", "checked", "--state", "FULLY_FILLED")
    assert bad.exit_code == 2
    assert "SIGNAL_RECEIVED -> FULLY_FILLED" in bad.output
    with db.unit_of_work() as uow:  # nothing written
        order = uow.session.get(Order, order_id)
        assert order is not None
        assert (order.state, order.needs_manual_review) == ("SIGNAL_RECEIVED", True)
        assert uow.session.scalar(select(func.count()).select_from(OrderTransition)) == (
            transitions_before
        )
    assert _review_items(db)[0].resolved_at is None

    unknown_state = cli("review", "resolve", str(item["id"]), "--note", "x", "--state", "GONE")
    assert unknown_state.exit_code == 2
    assert "valid states" in unknown_state.output

    ok(cli("review", "resolve", str(item["id"]), "--note", "broker says cancelled",
           "--state", "CANCELLED"))  # fmt: skip
    shown = as_json(cli("orders", "show", str(order_id), "--json"))
    assert (shown["state"], shown["needs_manual_review"]) == ("CANCELLED", False)
    assert shown["transitions"][-1]["reason"] == "manual review: broker says cancelled"
    assert _review_items(db)[0].resolution_note == "broker says cancelled"
    assert as_json(cli("review", "list", "--json")) == []

    again = cli("review", "resolve", str(item["id"]), "--note", "twice")
    assert again.exit_code == 2
    assert "already resolved" in again.output


def test_review_resolve_a_non_order_item(cli: Invoke, db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.session.add(ReviewItem(kind="position", ticker="AAPL", reason="broker shows 5 more"))
        uow.commit()
    item_id = as_json(cli("review", "list", "--json"))[0]["id"]

    with_state = cli("review", "resolve", str(item_id), "--note", "x", "--state", "CANCELLED")
    assert with_state.exit_code == 2
    assert "--state does not apply" in with_state.output

    ok(cli("review", "resolve", str(item_id), "--note", "adjusted by hand"))
    (item,) = _review_items(db)
    assert item.resolved_at is not None
    assert item.resolution_note == "adjusted by hand"

    missing = cli("review", "resolve", "424242", "--note", "x")
    assert missing.exit_code == 2
    assert "no review item 424242" in missing.output


def test_submit_wait_reports_the_final_state(cli: Invoke, db: Database, redis_url: str) -> None:
    make_order(db, "w-1", path=[S.VALIDATING, S.REJECTED])  # a repeat of a settled signal
    env: dict[str, str | None] = {"ARBITER_REDIS_URL": redis_url}

    settled = as_json(
        cli("submit", "long_term", "AAPL", "buy", "10", "--signal-id", "w-1", "--wait", "5",
            "--json", env=env)
    )  # fmt: skip
    assert settled == {
        "client_order_id": client_order_id_for("long_term", "w-1"),
        "signal_id": "w-1",
        "state": "REJECTED",
        "reason": "test: REJECTED",
        "final": True,
    }

    pending = cli(
        "submit", "long_term", "AAPL", "buy", "10", "--type", "limit", "--limit-price", "1.5",
        "--signal-id", "w-2", "--wait", "0.3", env=env,
    )  # fmt: skip
    if pending.exit_code == 0:  # a worker this run started got there first
        return
    assert pending.exit_code == 1
    assert "not final yet" in pending.output


# -- issue 13 ----------------------------------------------------------------------------------


def test_stored_text_is_printed_as_plain_text_never_as_markup_or_escapes(
    cli: Invoke, db: Database
) -> None:
    order_id = make_order(db, "odd-1")
    with db.unit_of_work() as uow:  # what a flawed writer, or an old row, could hold
        order = uow.session.get(Order, order_id)
        assert order is not None
        order.ticker = "[/x]"
        order.reason = "bad \x1b[31mred\x1b[0m [bold]text\r\n"
        uow.commit()
    for command in (("orders",), ("orders", "show", str(order_id))):
        result = ok(cli(*command))
        assert "\x1b" not in result.output and "\r" not in result.output
    assert "[/x]" in ok(cli("orders")).output


def test_strategies_key_shows_and_rotates_the_signing_key(cli: Invoke) -> None:
    shown = ok(cli("strategies", "key", "trading")).output.strip()
    assert len(shown) == 64 and ok(cli("strategies", "key", "trading")).output.strip() == shown
    rotated = ok(cli("strategies", "key", "trading", "--rotate")).output.strip()
    assert len(rotated) == 64 and rotated != shown
    assert ok(cli("strategies", "key", "trading")).output.strip() == rotated


def test_submit_makes_a_signal_id_and_prints_it(cli: Invoke, redis_url: str) -> None:
    result = as_json(
        cli("submit", "trading", "AAPL", "buy", "1", "--json", env={"ARBITER_REDIS_URL": redis_url})
    )
    assert result["signal_id"].startswith("cli-")
    assert result["client_order_id"] == client_order_id_for("trading", result["signal_id"])


def test_submit_with_redis_configured_but_down_prints_one_line(cli: Invoke) -> None:
    result = cli(
        "submit", "trading", "AAPL", "buy", "1", "--signal-id", "down-1",
        env={"ARBITER_REDIS_URL": "redis://127.0.0.1:1/0"},
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot reach Redis at 127.0.0.1:1")
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_kill_switch_cancel_open_also_sweeps_pending_orders_with_an_attempt(
    cli: Invoke, db: Database, simulator: Simulator
) -> None:
    from core.brokerage import OrderRequest, OrderType, Side

    order_id = make_order(db, "inflight-1", path=[S.VALIDATING, S.ORDER_PENDING])
    brokerage = simulator.brokerage()
    with db.unit_of_work() as uow:  # its POST landed; the answer never came back
        order = OrderManager(uow.session).lock(order_id)
        brokerage.submit(
            OrderRequest(order.client_order_id, "AAPL", Side.BUY, Decimal(10),
                         OrderType.LIMIT, Decimal("0.01"))
        )  # fmt: skip
        OrderManager(uow.session).update(order, submit_attempts=1)
        uow.commit()
        coid = order.client_order_id

    result = ok(
        cli("kill-switch", "on", "--cancel-open", env={"ARBITER_BROKERAGE_URL": simulator.url})
    )

    assert "asked the brokerage to cancel 1 live orders" in result.output
    assert simulator.admin.orders(coid)[0]["status"] == "canceled"


# -- order control and ownership moves ------------------------------------------------------


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
            cause=TransitionCause.BROKERAGE_REPORT, brokerage_order_id=live.brokerage_order_id,
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


def test_positions_with_prices_show_the_unrealised_pnl(
    cli: Invoke, db: Database, simulator: Simulator
) -> None:
    _hold(db, "AMD", "trading", "10", "100")
    simulator.admin.set_price("AMD", "112.5")
    rows = json.loads(
        ok(cli("positions", "--prices", "--json", env={"ARBITER_BROKERAGE_URL": simulator.url}))
        .stdout
    )
    (row,) = rows
    assert Decimal(row["market_price"]) == Decimal("112.5")
    assert Decimal(row["unrealized_pnl"]) == Decimal(125)
