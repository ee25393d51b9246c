"""Engine, sessions and the unit of work. The session's lifecycle lives here, outside the
data code: repositories and the OrderManager never commit on their own."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from types import TracebackType

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from core.events import Event
from db.order_writes import StagingSession

log = logging.getLogger(__name__)

AfterCommit = Callable[[Sequence[Event]], None]
PENDING_EVENTS = "arbiter_pending_events"


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use psycopg 3 for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(
    url: str, *, pool_size: int = 5, application_name: str = "arbiter", pre_ping: bool = True
) -> Engine:
    engine = create_engine(
        normalise_url(url),
        pool_size=pool_size,
        max_overflow=5,
        # A restarted Postgres leaves dead pooled connections behind: ping before use, unless
        # the caller retries on a dropped connection instead (the Celery tasks do).
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args={"application_name": application_name, "connect_timeout": 5},
    )
    _dispose_on_fork(engine)
    return engine


def _dispose_on_fork(engine: Engine) -> None:
    # A forked child (Celery prefork) must never reuse its parent's sockets.
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))


class UnitOfWork:
    """One transaction. Events emitted inside it are handed to `after_commit` once it
    committed; a failure there is logged and never undoes or fails the change."""

    def __init__(
        self, session_factory: Callable[[], Session], after_commit: AfterCommit | None = None
    ) -> None:
        self._session_factory = session_factory
        self._after_commit = after_commit
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self.session.info[PENDING_EVENTS] = []
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        self.session.commit()
        events: list[Event] = self.session.info[PENDING_EVENTS]
        self.session.info[PENDING_EVENTS] = []
        if events and self._after_commit is not None:
            try:
                self._after_commit(events)
            except Exception:  # the outbox relay will publish them later
                log.exception("publishing %d events after commit failed", len(events))

    def rollback(self) -> None:
        self.session.rollback()
        self.session.info[PENDING_EVENTS] = []


class Database:
    """The composition of engine, session factory and after-commit hook."""

    def __init__(
        self,
        url: str,
        after_commit: AfterCommit | None = None,
        *,
        pool_size: int = 5,
        application_name: str = "arbiter",
        pre_ping: bool = True,
    ) -> None:
        self.engine = make_engine(
            url, pool_size=pool_size, application_name=application_name, pre_ping=pre_ping
        )
        self.sessions = sessionmaker(self.engine, class_=StagingSession, expire_on_commit=False)
        self.after_commit = after_commit

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.after_commit)

    def dispose(self) -> None:
        self.engine.dispose()
