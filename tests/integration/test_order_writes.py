"""The OrderManager's staged column writes (db/order_writes.py): every statement of the
transaction sees them, a step's UPDATE rides in the outbox's one statement at COMMIT, a
rollback writes nothing, and each write moves the row's version on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from core.signals import Signal
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.models import Order
from db.order_manager import OrderManager
from db.strategies import strategy_by_name

S = OrderState
C = TransitionCause


def _new_order(db: Database, signal_id: str) -> int:
    signal = Signal.parse({"strategy": "trading", "signal_id": signal_id, "ticker": "AAPL",
                           "side": "buy", "quantity": "10"})  # fmt: skip
    with db.unit_of_work() as uow:
        strategy = strategy_by_name(uow.session, "trading")
        order, _ = OrderManager(uow.session).create_from_signal(signal, strategy, actor="test")
        uow.commit()
        return order.id


def _stored(db: Database, order_id: int) -> tuple[str, str | None, int]:
    """State, reason and version as another connection sees them."""
    with db.engine.connect() as conn:
        row = conn.execute(
            text("SELECT state, reason, version FROM orders WHERE id = :id"), {"id": order_id}
        ).one()
        return row.state, row.reason, row.version


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def _validating(session: Session, order_id: int) -> Order:
    return OrderManager(session).transition(
        order_id, S.VALIDATING, reason="checked", actor="test", cause=C.VALIDATION
    )


def test_a_query_later_in_the_transaction_sees_the_staged_change(db: Database) -> None:
    order_id = _new_order(db, "w-query")
    with db.unit_of_work() as uow:
        _validating(uow.session, order_id)
        seen = uow.session.scalar(
            select(func.count()).select_from(Order).where(
                Order.id == order_id, Order.state == S.VALIDATING.value
            )
        )
        assert seen == 1
        assert _stored(db, order_id)[0] == S.SIGNAL_RECEIVED.value  # not committed yet
        uow.commit()
    assert _stored(db, order_id)[:2] == (S.VALIDATING.value, "checked")


def test_a_steps_update_is_one_statement_with_its_audit_row_and_events(db: Database) -> None:
    order_id = _new_order(db, "w-one")
    with db.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        order = manager.lock(order_id)
        with _statements(db) as seen:
            manager.merge_metadata(order, note="staged")
            _validating(uow.session, order_id)
            uow.commit()
    writes = [s for s in seen if s not in ("BEGIN", "COMMIT")]
    assert len(writes) == 1, writes
    assert writes[0].startswith("WITH staged AS (UPDATE orders SET")
    with db.unit_of_work() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None and order.order_metadata["note"] == "staged"


def test_a_rolled_back_transaction_writes_none_of_its_changes(db: Database) -> None:
    order_id = _new_order(db, "w-rollback")
    before = _stored(db, order_id)
    with db.unit_of_work() as uow:
        _validating(uow.session, order_id)
        uow.rollback()
    assert _stored(db, order_id) == before


def test_without_autoflush_the_change_waits_for_the_commit(db: Database) -> None:
    order_id = _new_order(db, "w-noautoflush")
    with db.unit_of_work() as uow:
        _validating(uow.session, order_id)
        with uow.session.no_autoflush:
            state = uow.session.scalar(select(Order.state).where(Order.id == order_id))
        assert state == S.SIGNAL_RECEIVED.value
        uow.commit()
    assert _stored(db, order_id)[0] == S.VALIDATING.value


def test_every_write_moves_the_version_on_in_the_database_and_in_memory(db: Database) -> None:
    order_id = _new_order(db, "w-version")
    version = _stored(db, order_id)[2]
    with db.unit_of_work() as uow:
        order = _validating(uow.session, order_id)
        uow.session.flush()  # written here: the version moves on once
        OrderManager(uow.session).transition(
            order, S.ORDER_PENDING, reason="allowed", actor="test", cause=C.CONFLICT_CHECK
        )
        uow.commit()
        assert order.version == version + 2
    assert _stored(db, order_id) == (S.ORDER_PENDING.value, "allowed", version + 2)


def test_changes_to_two_orders_are_both_written(db: Database) -> None:
    first, second = _new_order(db, "w-two-a"), _new_order(db, "w-two-b")
    with db.unit_of_work() as uow:
        _validating(uow.session, first)
        _validating(uow.session, second)
        uow.commit()
    assert _stored(db, first)[0] == _stored(db, second)[0] == S.VALIDATING.value


def test_a_rolled_back_savepoint_restores_the_order_it_changed(db: Database) -> None:
    order_id = _new_order(db, "w-savepoint")
    with db.unit_of_work() as uow:
        savepoint = uow.session.begin_nested()
        order = _validating(uow.session, order_id)
        savepoint.rollback()
        assert order.state == S.SIGNAL_RECEIVED.value
        uow.commit()
    assert _stored(db, order_id)[0] == S.SIGNAL_RECEIVED.value
