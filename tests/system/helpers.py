"""Polling helpers for system tests: wait on the database, never on the clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from sqlalchemy import select

from core.states import TERMINAL_STATES
from db.engine import Database
from db.models import Order

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.1) -> T:
    """Call `check` until it returns something truthy (and return that), or fail."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def order_by_coid(db: Database, client_order_id: str) -> Order | None:
    with db.unit_of_work() as uow:
        return uow.session.scalar(select(Order).where(Order.client_order_id == client_order_id))


def wait_terminal(db: Database, coids: Iterable[str], timeout: float = 60.0) -> list[Order]:
    wanted = list(coids)

    def check() -> list[Order] | None:
        with db.unit_of_work() as uow:
            rows = list(uow.session.scalars(select(Order).where(Order.client_order_id.in_(wanted))))
        if len(rows) == len(wanted) and all(r.state in TERMINAL_STATES for r in rows):
            return rows
        return None

    return eventually(check, timeout)
