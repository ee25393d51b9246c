"""The outbox keeps a transaction's events and audit rows and writes them in one statement at
commit (db/outbox.py): what a rollback or a rolled-back savepoint undoes is never written."""

from __future__ import annotations

from sqlalchemy import select

from core.event_payloads import ErrorOccurred
from core.events import Event, EventType
from db.engine import Database
from db.models import EventRecord
from db.outbox import emit, record, write_pending


def _event(text: str) -> Event:
    return Event.of(EventType.ERROR_OCCURRED, ErrorOccurred(task="test", task_id=None, error=text))


def _stored(db: Database) -> list[str]:
    with db.sessions() as session:
        rows = session.scalars(
            select(EventRecord).where(EventRecord.source == "arbiter").order_by(EventRecord.seq)
        )
        return [row.payload["error"] for row in rows if row.payload.get("task") == "test"]


def test_events_are_written_at_commit_in_the_order_they_were_recorded(db: Database) -> None:
    with db.unit_of_work() as uow:
        emit(uow.session, _event("first"))
        record(uow.session, [_event("second"), _event("third")])
        assert _stored(db) == []  # nothing written before the commit
        uow.commit()
    assert _stored(db) == ["first", "second", "third"]


def test_a_rolled_back_transaction_writes_none_of_its_events(db: Database) -> None:
    with db.unit_of_work() as uow:
        emit(uow.session, _event("undone"))
        uow.rollback()
        emit(uow.session, _event("kept"))
        uow.commit()
    assert _stored(db) == ["kept"]


def test_a_rolled_back_savepoint_takes_its_events_and_no_others(db: Database) -> None:
    with db.unit_of_work() as uow:
        emit(uow.session, _event("before"))
        savepoint = uow.session.begin_nested()
        emit(uow.session, _event("inside"))
        savepoint.rollback()
        emit(uow.session, _event("after"))
        uow.commit()
    assert sorted(_stored(db)) == ["after", "before"]


def test_writing_early_takes_the_sequence_number_then(db: Database) -> None:
    with db.unit_of_work() as slow:
        emit(slow.session, _event("early seq"))
        write_pending(slow.session)
        with db.unit_of_work() as quick:
            emit(quick.session, _event("committed first"))
            quick.commit()
        slow.commit()
    assert _stored(db) == ["early seq", "committed first"]
