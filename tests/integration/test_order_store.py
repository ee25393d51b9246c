"""The order store on real Postgres: migrations, seeding, the single writer, the one-owner rule."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from core.errors import InvalidTransition
from core.signals import Signal
from core.states import OrderState, TransitionCause, is_valid_path
from db.engine import Database, normalise_url
from db.migrate import downgrade, upgrade
from db.models import EventRecord, Order, OrderTransition, Strategy, TickerOwnership
from db.order_manager import OrderManager
from db.seed import seed_default_strategies
from db.strategies import strategy_by_name

S = OrderState


def _signal(signal_id: str = "s1", **changes: object) -> Signal:
    data = {
        "strategy": "trading",
        "signal_id": signal_id,
        "ticker": "AAPL",
        "side": "buy",
        "quantity": "10",
    }
    return Signal.parse({**data, **changes})


def _new_order(db: Database, signal_id: str = "s1") -> int:
    with db.unit_of_work() as uow:
        strategy = strategy_by_name(uow.session, "trading")
        order, created = OrderManager(uow.session).create_from_signal(
            _signal(signal_id), strategy, actor="test"
        )
        uow.commit()
        assert created
        return order.id


def _counts(db: Database, order_id: int) -> tuple[str, int, int]:
    with db.unit_of_work() as uow:
        s = uow.session
        order = s.get(Order, order_id)
        assert order is not None
        audits = s.scalar(
            select(func.count())
            .select_from(OrderTransition)
            .where(OrderTransition.order_id == order_id)
        )
        events = s.scalar(
            select(func.count()).select_from(EventRecord).where(EventRecord.order_id == order_id)
        )
        return order.state, audits or 0, events or 0


def test_migrations_go_up_from_empty_and_back_down(postgres_server_url: str) -> None:
    name = f"arbiter_migrate_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalise_url(postgres_server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalise_url(postgres_server_url).rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        engine = create_engine(url)
        tables = set(inspect(engine).get_table_names())
        assert {
            "strategies",
            "orders",
            "order_transitions",
            "ticker_ownership",
            "conflict_logs",
            "positions",
            "fills",
            "events",
        } <= tables
        downgrade(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_seeding_twice_leaves_exactly_four_default_strategies(db: Database) -> None:
    with db.unit_of_work() as uow:
        assert seed_default_strategies(uow.session) == 0
        uow.commit()
    with db.unit_of_work() as uow:
        rows = {s.name: s.priority for s in uow.session.scalars(select(Strategy))}
    assert rows == {"long_term": 100, "dividend": 90, "trading": 50, "aggressive": 30}


def test_each_transition_writes_state_one_audit_row_and_its_events(db: Database) -> None:
    order_id = _new_order(db)
    assert _counts(db, order_id) == ("SIGNAL_RECEIVED", 1, 1)
    path = [S.VALIDATING, S.ORDER_PENDING, S.ORDER_SENT, S.PARTIAL_FILLED, S.FULLY_FILLED]
    for step, target in enumerate(path, start=2):
        with db.unit_of_work() as uow:
            OrderManager(uow.session).transition(order_id, target, reason="test", actor="test",
                cause=TransitionCause.OPERATOR)
            uow.commit()
        state, audits, _ = _counts(db, order_id)
        assert (state, audits) == (target.value, step)
    with db.unit_of_work() as uow:
        types = list(
            uow.session.scalars(
                select(EventRecord.type)
                .where(EventRecord.order_id == order_id)
                .order_by(EventRecord.seq)
            )
        )
    assert types == [
        "signal_received",
        "signal_validated",
        "order_sent",
        "order_partially_filled",
        "order_filled",
    ]


def test_an_invalid_transition_raises_and_writes_nothing(db: Database) -> None:
    order_id = _new_order(db)
    before = _counts(db, order_id)
    with (
        db.unit_of_work() as uow,
        pytest.raises(InvalidTransition, match="SIGNAL_RECEIVED -> FULLY_FILLED"),
    ):
        OrderManager(uow.session).transition(order_id, S.FULLY_FILLED, reason="x", actor="t",
            cause=TransitionCause.OPERATOR)
    assert _counts(db, order_id) == before


def test_a_repeated_signal_creates_nothing_new(db: Database) -> None:
    first = _new_order(db, "dup")
    with db.unit_of_work() as uow:
        strategy = strategy_by_name(uow.session, "trading")
        order, created = OrderManager(uow.session).create_from_signal(
            _signal("dup"), strategy, actor="test"
        )
        uow.commit()
    assert (order.id, created) == (first, False)
    assert _counts(db, first) == ("SIGNAL_RECEIVED", 1, 1)


def test_updated_at_is_kept_by_the_database(db: Database) -> None:
    order_id = _new_order(db)
    with db.unit_of_work() as uow:
        uow.session.execute(
            text("UPDATE orders SET updated_at = now() - interval '1 day' WHERE id = :id"),
            {"id": order_id},
        )
        uow.commit()
    with db.unit_of_work() as uow:
        uow.session.execute(
            text("UPDATE orders SET reason = 'touched' WHERE id = :id"), {"id": order_id}
        )
        uow.commit()
    with db.unit_of_work() as uow:
        age = uow.session.scalar(
            text("SELECT now() - updated_at FROM orders WHERE id = :id"), {"id": order_id}
        )
    assert age.total_seconds() < 3600


def test_a_second_primary_owner_for_a_ticker_fails_at_the_database(db: Database) -> None:
    with db.unit_of_work() as uow:
        ids = [s.id for s in uow.session.scalars(select(Strategy).order_by(Strategy.id))]
        uow.session.add(TickerOwnership(ticker="MSFT", strategy_id=ids[0]))
        uow.commit()
    with db.unit_of_work() as uow:
        uow.session.add(TickerOwnership(ticker="MSFT", strategy_id=ids[1]))
        with pytest.raises(IntegrityError, match="uq_ticker_ownership_one_owner"):
            uow.session.flush()


def _walk(url: str, order_id: int, targets: list[str], barrier: object) -> list[str]:
    database = Database(url)
    barrier.wait()  # type: ignore[attr-defined]
    applied = []
    for target in targets:
        with database.unit_of_work() as uow:
            try:
                OrderManager(uow.session).transition(
                    order_id,
                    S(target),
                    reason="race",
                    actor=f"proc-{multiprocessing.current_process().name}",
                    cause=TransitionCause.OPERATOR,
                )
                uow.commit()
                applied.append(target)
            except InvalidTransition:
                uow.rollback()
    database.dispose()
    return applied


def test_two_processes_transitioning_one_order_serialise_without_lost_updates(
    db: Database, migrated_database_url: str
) -> None:
    order_id = _new_order(db)
    with db.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        for target in (S.VALIDATING, S.ORDER_PENDING, S.ORDER_SENT):
            manager.transition(order_id, target, reason="setup", actor="test",
                cause=TransitionCause.OPERATOR)
        uow.commit()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(2)
    # Both race to report partial fills, then both try to finish it.
    targets = ["PARTIAL_FILLED"] * 20 + ["FULLY_FILLED", "CANCELLED"]
    with ctx.Pool(2) as pool:
        results = pool.starmap(_walk, [(migrated_database_url, order_id, targets, barrier)] * 2)
    with db.unit_of_work() as uow:
        order = uow.session.get(Order, order_id)
        trail = list(
            uow.session.scalars(
                select(OrderTransition)
                .where(OrderTransition.order_id == order_id)
                .order_by(OrderTransition.id)
            )
        )
    applied = sum(len(r) for r in results)
    assert len(trail) == 4 + applied  # every applied transition has its audit row
    finals = [t for r in results for t in r if t in ("FULLY_FILLED", "CANCELLED")]
    assert len(finals) == 1  # only one of the racers may end the order
    assert order is not None and order.state == finals[0]
    states = [S(trail[0].from_state)] + [S(t.to_state) for t in trail]
    assert is_valid_path(states)
    assert order.state == trail[-1].to_state
