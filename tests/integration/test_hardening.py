"""Regression tests for issue 13 (hardening), one or more per numbered finding, on real
Postgres, Redis and the brokerage simulator. Each failed on the code before the fix."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import func, select, text

from adapters.alpaca import AlpacaBrokerage
from core.errors import BrokerageUnavailable, InvalidInput
from core.events import Event, EventType, channel_for
from core.risk import RiskLimits
from core.settings import Settings
from core.signing import sign
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.kill_switch import set_kill_switch
from db.models import EventRecord, Order, ReviewItem
from db.order_manager import OrderManager
from db.strategies import signing_key
from service_layer import reconciliation, recovery, submission
from service_layer.conflict_check import check_conflict
from service_layer.intake import MAX_ERROR, IntakeBounds, intake_signal
from service_layer.validation import validate
from strategy_client import pending, routing
from strategy_client.client import SignalClient
from strategy_client.subscriber import EventSubscriber
from tasks import backlog
from tests.fixtures.keys import db_keys, signed
from tests.fixtures.simulator import REPO_ROOT, Simulator
from tests.integration.test_reconcile import backdate, build_order, order_row, place

S = OrderState
LIMITS = RiskLimits(
    max_order_quantity=Decimal(10_000),
    max_order_notional=Decimal(250_000),
    max_open_orders=500,
    max_signals_per_minute=600,
)
OPEN = {"new", "accepted", "pending_new", "partially_filled", "held"}


def _raw(signal_id: str, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "strategy": "trading",
        "signal_id": signal_id,
        "ticker": "AAPL",
        "side": "buy",
        "quantity": "10",
    }
    raw.update(changes)
    return raw


def _intake(db: Database, raw: Any, message_id: str = "m-1", **bounds: Any) -> int | None:
    """As the intake task does it: an Unstorable signal is refused in a second transaction."""
    return intake_signal(
        db, raw, actor="test", message_id=message_id, bounds=IntakeBounds(**bounds)
    )


def _pending_order(db: Database, raw: dict[str, Any]) -> int:
    """A signed signal walked to ORDER_PENDING (claim taken), as the pipeline would."""
    order_id = _intake(db, signed(db, raw), message_id=f"m-{raw['signal_id']}")
    assert order_id is not None
    for step in (
        lambda s: validate(
            s, order_id, LIMITS, actor="test", reference_price=lambda _t: Decimal("100")
        ),
        lambda s: check_conflict(s, order_id, actor="test"),
    ):
        with db.unit_of_work() as uow:
            step(uow.session)
            uow.commit()
    assert order_row(db, order_id).state == S.ORDER_PENDING.value
    return order_id


@pytest.fixture
def resting(simulator_factory: Callable[..., Simulator]) -> Simulator:
    """A simulator whose orders rest (fills come after ten minutes): "open" means open."""
    return simulator_factory(fill_latency_ms=600_000)


def _open_at(simulator: Simulator) -> list[dict[str, Any]]:
    return [o for o in simulator.admin.orders() if o["status"] in OPEN]


# -- 1. the kill switch stops retried submissions ---------------------------------------------


def test_kill_switch_during_accept_then_timeout_leaves_nothing_open_at_the_brokerage(
    db: Database, resting: Simulator
) -> None:
    simulator = resting
    brokerage = simulator.brokerage(timeout_s=0.5)
    order_id = _pending_order(db, _raw("ks-1"))
    simulator.admin.set_faults(accept_then_timeout_count=1, hang_ms=3000)
    with pytest.raises(BrokerageUnavailable):  # the brokerage took it; the answer was lost
        submission.submit(db, brokerage, order_id)
    simulator.admin.clear_faults()
    with db.unit_of_work() as uow:
        set_kill_switch(uow.session, True, "halt", actor="test")
        uow.commit()

    submission.submit(db, brokerage, order_id)  # the task's retry, with the switch on

    assert _open_at(simulator) == []
    assert len(simulator.admin.orders()) == 1  # looked up, never POSTed again
    assert order_row(db, order_id).state == S.CANCELLED.value


def test_kill_switch_on_a_retry_the_brokerage_never_got_cancels_without_posting(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    order_id = _pending_order(db, _raw("ks-2"))
    with db.unit_of_work() as uow:  # an attempt was recorded, its POST never arrived
        OrderManager(uow.session).update(order_id, submit_attempts=1)
        set_kill_switch(uow.session, True, "halt", actor="test")
        uow.commit()

    submission.submit(db, brokerage, order_id)

    assert simulator.admin.orders() == []
    assert order_row(db, order_id).state == S.CANCELLED.value


# -- 2. ages on the database's clock; terminal here, open there --------------------------------


class _Skewed:
    """`datetime` for a worker whose clock is `offset` off (a paused or skewed machine)."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self, tz: Any = None) -> datetime:
        return datetime.now(tz) + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(datetime, name)


@pytest.fixture
def worker_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[timedelta], None]:
    """Set this process's clock, as the service modules read it, `offset` off."""

    def skew(offset: timedelta) -> None:
        for module in (submission, reconciliation, recovery):
            monkeypatch.setattr(module, "datetime", _Skewed(offset), raising=False)

    return skew


def test_a_submitting_worker_an_hour_behind_does_not_get_its_order_failed(
    db: Database,
    simulator: Simulator,
    brokerage: AlpacaBrokerage,
    worker_clock: Callable[[timedelta], None],
) -> None:
    order_id = _pending_order(db, _raw("skew-1"))
    worker_clock(timedelta(hours=-1))
    with db.unit_of_work() as uow:  # the submitting worker records its attempt...
        plan = submission.begin_submit(uow.session, order_id)
        uow.commit()
    assert plan is not None
    worker_clock(timedelta(hours=1))  # ...and a reconciling worker an hour ahead looks
    report = reconciliation.reconcile_open_orders(db, brokerage, never_received_grace_s=60)

    assert report.failed_never_received == 0
    assert order_row(db, order_id).state == S.ORDER_PENDING.value  # its POST may be on the way


FAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
SUBMITTING_WORKER = """
import sys, datetime
from db.engine import Database
from service_layer.submission import begin_submit
database = Database(sys.argv[1], pool_size=1)
with database.unit_of_work() as uow:
    assert begin_submit(uow.session, int(sys.argv[2])) is not None
    uow.commit()
print(datetime.datetime.now(datetime.UTC).isoformat())
"""


@pytest.mark.skipif(FAKETIME is None, reason="needs libfaketime (apt install libfaketime)")
def test_a_submitting_process_whose_clock_is_an_hour_behind_does_not_get_its_order_failed(
    db: Database, migrated_database_url: str, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    order_id = _pending_order(db, _raw("faketime-1"))
    env = {
        **os.environ,
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME": "-1h",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", SUBMITTING_WORKER, migrated_database_url, str(order_id)],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    its_clock = datetime.fromisoformat(done.stdout.strip().splitlines()[-1])
    assert its_clock < datetime.now(UTC) - timedelta(minutes=55)  # the process ran an hour off

    report = reconciliation.reconcile_open_orders(db, brokerage, never_received_grace_s=60)

    assert report.failed_never_received == 0
    assert order_row(db, order_id).state == S.ORDER_PENDING.value


def test_a_stalled_sweep_an_hour_ahead_redrives_nothing_young(
    db: Database, worker_clock: Callable[[timedelta], None]
) -> None:
    built = build_order(db, to=S.VALIDATING)
    worker_clock(timedelta(hours=1))
    assert recovery.find_stalled(db, stalled_after_s=30).redrive == []
    assert order_row(db, built.id).state == S.VALIDATING.value


def test_an_order_failed_here_but_open_at_the_brokerage_is_cancelled_there_and_flagged(
    db: Database, resting: Simulator
) -> None:
    simulator, brokerage = resting, resting.brokerage()
    built = build_order(db, to=S.ORDER_PENDING, ticker="MSFT", attempts=1)
    broker_id = place(db, brokerage, built)  # the POST landed late...
    with db.unit_of_work() as uow:  # ...after the order was failed as never received
        OrderManager(uow.session).transition(
            built.id,
            S.FAILED,
            reason=reconciliation.NEVER_RECEIVED,
            actor="test",
            cause=TransitionCause.RECONCILIATION,
        )
        uow.commit()

    report = reconciliation.reconcile_open_orders(db, brokerage, never_received_grace_s=60)

    assert simulator.admin.orders(built.client_order_id)[0]["status"] == "canceled"
    order = order_row(db, built.id)
    assert order.state == S.FAILED.value and order.needs_manual_review
    assert broker_id in (order.reason or "")
    assert report.flagged == 1
    with db.unit_of_work() as uow:
        flagged = uow.session.scalars(
            select(EventRecord.order_id).where(
                EventRecord.type == EventType.ORDER_NEEDS_REVIEW.value
            )
        ).all()
    assert list(flagged) == [built.id]


# -- 3. signals that parse but mean nothing; unstorable signals; dead letters -------------------


def test_a_signal_the_database_refuses_is_rejected_with_the_reason(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.session.execute(
            text("ALTER TABLE orders ADD CONSTRAINT test_no_zzzz CHECK (ticker <> 'ZZZZ')")
        )
        uow.commit()
    try:
        order_id = _intake(db, signed(db, _raw("unstorable", ticker="ZZZZ")))
    finally:
        with db.unit_of_work() as uow:
            uow.session.execute(text("ALTER TABLE orders DROP CONSTRAINT test_no_zzzz"))
            uow.commit()
    assert order_id is not None
    order = order_row(db, order_id)
    assert order.state == S.REJECTED.value
    assert (order.reason or "").startswith("cannot be stored: CheckViolation")


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    celery = Celery("test-sweeps", broker=redis_url)
    celery.conf.update(task_serializer="json", task_routes=routing.TASK_ROUTES)
    yield celery
    celery.close()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def test_a_pending_signal_resent_too_often_becomes_a_dead_letter_not_a_loop(
    db: Database, app: Celery, rclient: redis.Redis
) -> None:
    from tasks.maintenance import resend_lost_signals

    settings = Settings(stalled_after_s=0, pending_max_resends=2)
    message = _raw("never-recorded")
    pending.remember(rclient, "arb-never", message)
    outcomes = []
    for _ in range(4):
        time.sleep(0.01)
        outcomes.append(resend_lost_signals(app, db, rclient, settings))

    assert outcomes == [(1, 0), (1, 0), (0, 1), (0, 0)]
    assert rclient.hlen(pending.PENDING_KEY) == 0
    with db.unit_of_work() as uow:
        items = uow.session.scalars(select(ReviewItem).where(ReviewItem.kind == "signal")).all()
        assert len(items) == 1 and "arb-never" in items[0].reason
        dead = uow.session.scalars(
            select(EventRecord).where(EventRecord.type == EventType.ERROR_OCCURRED.value)
        ).all()
        assert [(e.client_order_id, e.payload["kind"]) for e in dead] == [
            ("arb-never", "dead_letter")
        ]
        assert "arb-never" in dead[0].payload["error"]


# -- 4. sweeps leave waiting work alone; flagged orders are never executed -----------------------


def test_an_order_waiting_behind_a_deep_queue_is_not_redriven(
    db: Database, app: Celery, rclient: redis.Redis
) -> None:
    from tasks.maintenance import sweep

    settings = Settings(stalled_after_s=1, recover_stalled_interval_s=1)
    built = build_order(db, to=S.SIGNAL_RECEIVED)
    # Its validate message waits in the queue behind others (kombu pops from the tail).
    for n in range(3):
        waiting = {"headers": {"id": f"task-{n}"}, "body": ""}
        rclient.lpush(routing.SIGNALS_QUEUE, json.dumps(waiting))
    backlog.oldest_waiting_s(rclient, [routing.SIGNALS_QUEUE])  # a first sweep saw the queue
    backdate(db, built.id, 5)  # older than stalled_after_s, younger than the backlog
    rclient.hset(
        backlog.WATCH_KEY, f"q:{routing.SIGNALS_QUEUE}:task-0", float(rclient.time()[0]) - 30
    )

    result = sweep(app, db, rclient, settings)

    assert result["redriven"] == 0
    assert result["waiting_s"] >= 30
    assert rclient.llen(routing.SIGNALS_QUEUE) == 3  # nothing piled on
    assert order_row(db, built.id).order_metadata.get("redrives") is None


def test_a_delivery_held_longer_than_any_live_worker_would_is_not_a_backlog(
    db: Database, app: Celery, rclient: redis.Redis
) -> None:
    from tasks.maintenance import sweep

    settings = Settings(stalled_after_s=1, recover_stalled_interval_s=1, task_time_limit_s=10)
    built = build_order(db, to=S.SIGNAL_RECEIVED)
    # What a worker killed holding the order's message leaves: a delivery in kombu's unacked
    # set, first noted 5 minutes ago (far beyond the time limit plus the longest backoff).
    rclient.hset(backlog.UNACKED_KEY, "tag-dead", "[]")
    rclient.hset(backlog.WATCH_KEY, "u:tag-dead", float(rclient.time()[0]) - 300)
    backdate(db, built.id, 5)

    result = sweep(app, db, rclient, settings)

    assert result["redriven"] == 1
    assert result["waiting_s"] == 0.0
    assert order_row(db, built.id).order_metadata.get("redrives") == 1

def test_no_step_executes_an_order_flagged_for_review(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    received = _intake(db, signed(db, _raw("flag-1")), message_id="f1")
    pending_id = _pending_order(db, _raw("flag-2", ticker="MSFT"))
    assert received is not None
    with db.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        manager.flag_for_review(received, "stalled in SIGNAL_RECEIVED after 5 re-drives", actor="t")
        manager.flag_for_review(pending_id, "stalled in ORDER_PENDING after 5 re-drives", actor="t")
        uow.commit()

    with db.unit_of_work() as uow:
        validate(uow.session, received, LIMITS, actor="test")
        uow.commit()
    submission.submit(db, brokerage, pending_id)

    assert order_row(db, received).state == S.SIGNAL_RECEIVED.value
    assert order_row(db, pending_id).state == S.ORDER_PENDING.value
    assert simulator.admin.orders() == []


# -- 7. proven strategy identity -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (lambda m, k: {x: v for x, v in m.items() if x not in ("signed_at", "signature")},
         "unsigned"),
        (lambda m, k: {**m, "quantity": "99"}, "bad signature"),
        (lambda m, k: sign("not-the-key", _strip(m), m["signed_at"]), "bad signature"),
        (lambda m, k: sign(k, _strip(m), m["signed_at"] - 7200), "stale"),
        (lambda m, k: {**sign(k, _strip(m), m["signed_at"]), "strategy": "long_term"},
         "bad signature"),
    ],
)  # fmt: skip
def test_a_signal_not_signed_by_its_strategy_is_rejected_unauthenticated(
    db: Database, tamper: Callable[[dict[str, Any], str], dict[str, Any]], why: str
) -> None:
    good = signed(db, _raw("auth-1"))
    key = db_keys(db)["trading"]
    order_id = _intake(db, tamper(good, key), message_id="forged-1")

    assert order_id is not None
    order = order_row(db, order_id)
    assert order.state == S.REJECTED.value
    assert (order.reason or "").startswith(f"unauthenticated: {why}")
    # The forgery did not take the strategy's signal id: the real signal still goes through.
    real = _intake(db, good, message_id="real-1")
    assert real != order_id and order_row(db, real or 0).state == S.SIGNAL_RECEIVED.value


def _strip(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k not in ("signed_at", "signature")}


def test_a_rotated_key_refuses_signals_signed_with_the_old_one(db: Database) -> None:
    old = signed(db, _raw("rot-1"))
    with db.unit_of_work() as uow:
        new_key = signing_key(uow.session, "trading", rotate=True)
        uow.commit()
    assert new_key != old  # a new 64-hex key
    order_id = _intake(db, old)
    assert (order_row(db, order_id or 0).reason or "").startswith("unauthenticated")


def test_external_events_may_not_pose_as_arbiter_nor_name_a_missing_order(db: Database) -> None:
    from db.publisher import EventPublisher
    from strategy_client.external_events import publish_external, validate_external

    with pytest.raises(InvalidInput, match="published by Arbiter"):
        validate_external("SYSTEM_STOPPED", source="war-room", payload={})
    with pytest.raises(InvalidInput, match="published by Arbiter"):
        validate_external("ERROR_OCCURRED", source="war-room", payload={})
    with pytest.raises(InvalidInput, match="reserved"):
        validate_external("RISK_ALERT", source="arbiter.reconcile_orders", payload={})
    event = validate_external("RISK_ALERT", source="war-room", payload={})
    assert event.source == "external:war-room"
    publisher = EventPublisher("redis://127.0.0.1:1/0", "test.events")
    with pytest.raises(InvalidInput, match="names no order"):
        publish_external(db, publisher, "RISK_ALERT", source="war-room", payload={}, order_id=999)
    with db.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(EventRecord)) == 0


def test_a_subscriber_drops_an_envelope_whose_type_is_not_its_channel(db: Database) -> None:
    seen: list[Event] = []
    subscriber = EventSubscriber("redis://127.0.0.1:1/0", db, channel_prefix="t.events")
    subscriber.on(None, seen.append)
    forged = Event(type=EventType.ORDER_FILLED, source="arbiter.submit", payload={})
    for channel in (channel_for(EventType.DEBATE_STARTED, "t.events"),
                    channel_for(EventType.ORDER_FILLED, "t.events")):  # fmt: skip
        subscriber._handle_message(
            {"type": "pmessage", "channel": channel.encode(), "data": forged.to_json()}
        )
    assert [e.id for e in seen] == [forged.id]  # only the one on its own channel


# -- 10. bounded storage under a flood ---------------------------------------------------------


def test_over_its_bound_a_strategy_writes_nothing(db: Database) -> None:
    results = [
        _intake(db, signed(db, _raw(f"flood-{i}")), message_id=f"f-{i}", per_minute=3)
        for i in range(6)
    ]
    assert [r is None for r in results] == [False] * 3 + [True] * 3
    with db.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Order)) == 3


def test_unknown_unsigned_and_malformed_signals_share_one_small_bound(db: Database) -> None:
    floods: list[Any] = [
        *(_raw(f"u-{i}", strategy=f"nobody_{i}") for i in range(3)),
        *(_raw(f"x-{i}") for i in range(3)),  # unsigned
        *({"junk": i} for i in range(3)),
    ]
    for i, raw in enumerate(floods):
        _intake(db, raw, message_id=f"fl-{i}", untrusted_per_minute=4)
    with db.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Order)) == 4


def test_a_huge_malformed_signal_stores_a_short_reason(db: Database) -> None:
    order_id = _intake(db, _raw("huge", ticker="X" * 1_000_000), message_id="huge-1")
    order = order_row(db, order_id or 0)
    assert order.state == S.REJECTED.value
    assert len(order.reason or "") <= MAX_ERROR
    with db.unit_of_work() as uow:
        longest = uow.session.scalar(text("SELECT max(length(payload::text)) FROM events"))
        assert longest is not None and longest < 20_000
        transitions = uow.session.scalar(text("SELECT max(length(reason)) FROM order_transitions"))
        assert transitions <= MAX_ERROR


# -- 11. the client API ------------------------------------------------------------------------


def test_a_failed_enqueue_leaves_no_pending_copy(db: Database, redis_url: str) -> None:
    client = SignalClient(redis_url, keys=db_keys(db))
    client.app.conf.broker_url = "redis://127.0.0.1:1/0"  # the broker is away
    client.app.conf.broker_connection_retry = False
    client.app.conf.broker_connection_max_retries = 0
    try:
        with pytest.raises(Exception):  # noqa: B017 - kombu's or redis's connection error
            client.submit_signal("trading", "AAPL", "buy", 1, signal_id="lost-enqueue")
        assert client.redis.hlen(pending.PENDING_KEY) == 0
    finally:
        client.close()


def test_signal_id_is_required_by_the_client_api() -> None:
    import inspect

    from strategy_client import client as client_module

    for function in (client_module.submit_signal, SignalClient.submit_signal):
        parameter = inspect.signature(function).parameters["signal_id"]
        assert parameter.default is inspect.Parameter.empty
