"""A message stranded in Redis's unacked set by a worker that died holding it (SIGKILLed before
it ran the task): the order behind it must still settle, whatever the visibility timeout.

kombu's Redis transport keeps each delivered message in an `unacked` hash until the ack; a
worker that dies takes nobody's ack with it, and another worker's periodic scan puts the
message back on its queue once it is older than the visibility timeout. Until then, the
stalled sweep must not mistake it for a backlog (tasks/backlog.py), and the scan must come
soon after the timeout (strategy_client/broker.py). A worker killed between kombu's BRPOP and
that bookkeeping loses the message outright: the client's safety copy (strategy_client/
pending.py) is what brings it back. RabbitMQ returns a dead consumer's messages at once, so
these tests are Redis's.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
import redis

from core.signals import client_order_id_for
from db.engine import Database
from strategy_client.client import SignalClient
from tests.fixtures.processes import CeleryProcess
from tests.fixtures.services import TEST_BROKER
from tests.fixtures.simulator import Simulator
from tests.system.helpers import eventually, wait_terminal

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(TEST_BROKER != "redis", reason="RabbitMQ gives a dead consumer's back"),
]


def _strand_a_signal(
    client: SignalClient,
    broker: redis.Redis,
    start_worker: Callable[..., CeleryProcess],
    env: dict[str, str],
    signal_id: str,
) -> tuple[str, set[Any]]:
    """A worker takes the signal's intake message and is SIGKILLed before running it:
    (client_order_id, the stranded delivery tags)."""
    doomed = start_worker("doomed", concurrency=1, queues="signals", extra_env=env)
    for pid in doomed.child_pids():
        os.kill(pid, signal.SIGSTOP)  # the pool never runs what the main process takes
    coid = client.submit_signal("trading", "STRD", "buy", 2, signal_id=signal_id)
    eventually(lambda: "Task arbiter.intake[" in doomed.log())
    doomed.kill()
    stranded = {tag for tag, task in _unacked(broker).items() if task == "arbiter.intake"}
    assert len(stranded) == 1
    return coid, stranded


def _unacked(broker: redis.Redis) -> dict[Any, str]:
    """kombu's unacked deliveries (a live worker's beat tasks among them): tag -> task name."""
    return {
        tag: json.loads(entry)[0]["headers"]["task"]
        for tag, entry in broker.hgetall("unacked").items()
    }


def _one_brokerage_order(simulator: Simulator, coid: str) -> None:
    assert [o["client_order_id"] for o in simulator.admin.orders()] == [coid]


def test_a_stranded_message_does_not_hold_its_signal_back_until_the_visibility_timeout(
    db: Database,
    client: SignalClient,
    broker_url: str,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    # The default visibility timeout (an hour): Redis gives the message back only then, so the
    # stalled sweep must resend the signal meanwhile rather than count the stranded message as
    # a backlog that every threshold waits for. A task time limit of 15 s makes a delivery held
    # longer than 45 s (limit plus the longest backoff) abandoned.
    short = {"ARBITER_TASK_TIME_LIMIT_S": "15"}
    start_worker("sweeper", queues="maintenance", extra_env=short)  # the beat's tasks only
    start_beat()
    broker = redis.Redis.from_url(broker_url)
    coid, stranded = _strand_a_signal(client, broker, start_worker, short, "stranded-1")

    start_worker("rescuer", queues="signals,orders", extra_env=short)
    (order,) = wait_terminal(db, [coid], timeout=180)

    assert order.state == "FULLY_FILLED"
    assert stranded <= set(_unacked(broker))  # still stranded: the sweep settled it
    _one_brokerage_order(simulator, coid)


def test_a_stranded_message_is_given_back_soon_after_a_short_visibility_timeout(
    db: Database,
    client: SignalClient,
    broker_url: str,
    start_worker: Callable[..., CeleryProcess],
    simulator: Simulator,
) -> None:
    # No beat, so no sweep: only the transport's scan of the unacked set can give the message
    # back. With kombu's default cadence it scans every 100 s; ours scans every few seconds.
    short = {"ARBITER_TASK_TIME_LIMIT_S": "15", "ARBITER_VISIBILITY_TIMEOUT_S": "30"}
    broker = redis.Redis.from_url(broker_url)
    coid, stranded = _strand_a_signal(client, broker, start_worker, short, "stranded-2")
    (tag,) = stranded
    raw_message = json.loads(broker.hget("unacked", tag) or b"[]")[0]
    task_id = raw_message["headers"]["id"]

    rescuer = start_worker("rescuer", extra_env=short)
    (order,) = wait_terminal(db, [coid], timeout=90)

    assert order.state == "FULLY_FILLED"
    assert not stranded & set(_unacked(broker))
    assert f"Task arbiter.intake[{task_id}] received" in rescuer.log()  # given back, taken again
    _one_brokerage_order(simulator, coid)


def test_a_raw_message_lost_before_any_worker_took_it_is_sent_again_and_recorded(
    db: Database,
    client: SignalClient,
    broker_url: str,
    start_worker: Callable[..., CeleryProcess],
    start_beat: Callable[..., CeleryProcess],
) -> None:
    # A malformed signal put on the pipeline raw (not through submit_signal), then taken off
    # the queue as a worker SIGKILLed right after its BRPOP would: nothing holds it any more
    # but the client's safety copy, which the stalled sweep resends; intake records it.
    raw = {"strategy": "trading", "signal_id": "lost-raw-1", "ticker": "LOST", "side": "buy",
           "quantity": "x"}
    client.enqueue(raw)
    assert redis.Redis.from_url(broker_url).rpop("signals") is not None  # the message is gone

    start_worker()
    start_beat()
    (order,) = wait_terminal(db, [client_order_id_for("trading", "lost-raw-1")])

    assert order.state == "REJECTED"
