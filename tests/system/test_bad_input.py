"""Bad input at the client and on the queue: a clear error or a REJECTED order, never a
crashed worker or a stuck message."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import func, select

from core.errors import InvalidSignal
from db.engine import Database
from db.models import EventRecord, Order
from strategy_client import routing
from strategy_client.client import SignalClient
from tests.fixtures.keys import db_keys
from tests.fixtures.processes import CeleryProcess
from tests.system.helpers import eventually

pytestmark = pytest.mark.system


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quantity": -5}, "quantity"),
        ({"quantity": math.nan}, "quantity"),
        ({"quantity": math.inf}, "quantity"),
        ({"quantity": 10**12}, "quantity"),
        ({"quantity": "ten"}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"ticker": ""}, "ticker"),
        ({"ticker": "AAPL'; DROP TABLE orders;--"}, "ticker"),
        ({"ticker": "ÄPFEL"}, "ticker"),
        ({"ticker": 42}, "ticker"),
        ({"side": "hold"}, "side"),
        ({"strategy": "Not A Strategy"}, "strategy"),
        ({"order_type": "limit"}, "limit_price"),
        ({"limit_price": -1, "order_type": "limit"}, "limit_price"),
    ],
)
def test_the_client_names_the_bad_field_and_enqueues_nothing(
    redis_url: str, kwargs: dict[str, Any], field: str
) -> None:
    queue = redis.Redis.from_url(redis_url)
    queue.delete(routing.SIGNALS_QUEUE)
    args: dict[str, Any] = {
        "strategy": "trading",
        "ticker": "AAPL",
        "side": "buy",
        "quantity": 10,
        "signal_id": "bad",
    }
    args.update(kwargs)
    with pytest.raises(InvalidSignal) as raised:
        SignalClient(redis_url, keys="unused: the shape check comes first").submit_signal(**args)
    assert raised.value.field == field
    assert queue.llen(routing.SIGNALS_QUEUE) == 0


RAW_MESSAGES: list[Any] = [
    {
        "strategy": "trading",
        "signal_id": "raw-neg",
        "ticker": "AAPL",
        "side": "buy",
        "quantity": "-1",
    },
    {
        "strategy": "trading",
        "signal_id": "raw-nan",
        "ticker": "AAPL",
        "side": "buy",
        "quantity": "NaN",
    },
    {
        "strategy": "trading",
        "signal_id": "raw-ticker",
        "ticker": "<script>",
        "side": "buy",
        "quantity": "1",
    },
    {
        "strategy": "trading",
        "signal_id": "raw-extra",
        "ticker": "AAPL",
        "side": "buy",
        "quantity": "1",
        "leverage": 100,
    },
    {
        "strategy": "nobody",
        "signal_id": "raw-unknown",
        "ticker": "AAPL",
        "side": "buy",
        "quantity": "1",
    },
    {"signal_id": "raw-missing"},
    [1, 2, 3],
    "just a string",
    12345,
    None,
]


def test_malformed_messages_on_the_queue_end_rejected_and_the_worker_lives(
    db: Database,
    redis_url: str,
    start_worker: Callable[..., CeleryProcess],
) -> None:
    worker = start_worker()
    client = SignalClient(redis_url, keys=db_keys(db))
    for raw in RAW_MESSAGES:
        client.enqueue(raw)
    # A message with the wrong arity, and garbage order ids for the later steps.
    client.app.send_task(routing.INTAKE, args=("a", "b"), kwargs={"c": 1})
    client.app.send_task(routing.VALIDATE, args=("not-an-id",))
    client.app.send_task(routing.SUBMIT, args=(-3,))
    # Then a good signal: it must still go through.
    good = client.submit_signal("trading", "AAPL", "buy", 1, signal_id="after-garbage")

    def settled() -> bool:
        with db.unit_of_work() as uow:
            total = uow.session.scalar(select(func.count()).select_from(Order)) or 0
            good_state = uow.session.scalar(
                select(Order.state).where(Order.client_order_id == good)
            )
        return total == len(RAW_MESSAGES) + 2 and good_state == "FULLY_FILLED"

    eventually(settled, timeout=60)
    with db.unit_of_work() as uow:
        rejected = list(uow.session.scalars(select(Order).where(Order.state == "REJECTED")))
    assert len(rejected) == len(RAW_MESSAGES) + 1
    assert all(o.reason for o in rejected)
    assert worker.proc is not None and worker.proc.poll() is None

    # The garbage order ids failed their tasks for good: each is an ERROR_OCCURRED event.
    def failures() -> set[str]:
        with db.unit_of_work() as uow:
            rows = uow.session.scalars(
                select(EventRecord).where(EventRecord.type == "error_occurred")
            ).all()
        return {r.payload["task"] for r in rows}

    eventually(lambda: {routing.VALIDATE, routing.SUBMIT} <= failures())
    with db.unit_of_work() as uow:
        assert uow.session.scalar(
            select(func.count())
            .select_from(EventRecord)
            .where(EventRecord.type == "system_started")
        )
    queues = redis.Redis.from_url(redis_url)
    eventually(
        lambda: all(queues.llen(q) == 0 for q in (routing.SIGNALS_QUEUE, routing.ORDERS_QUEUE))
    )


def test_a_pickle_message_is_refused_never_executed(
    db: Database, redis_url: str, start_worker: Callable[..., CeleryProcess]
) -> None:
    worker = start_worker()
    sender = Celery("pickler", broker=redis_url)
    sender.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    sender.send_task(
        routing.INTAKE,
        args=(
            {
                "strategy": "trading",
                "signal_id": "pickled",
                "ticker": "AAPL",
                "side": "buy",
                "quantity": "1",
            },
        ),
        queue=routing.SIGNALS_QUEUE,
        serializer="pickle",
    )
    eventually(
        lambda: "Refusing to deserialize untrusted content of type pickle" in worker.log(),
        timeout=30,
    )
    with db.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Order)) == 0
    assert worker.proc is not None and worker.proc.poll() is None
