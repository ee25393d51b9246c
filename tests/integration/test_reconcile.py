"""Reconciliation and recovery against a real Postgres and a real brokerage simulator over HTTP.

Orders are built the way the pipeline builds them (create_from_signal, then transitions) and
placed at the simulator through the adapter, as if a worker had sent them and then died."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, text

from adapters.alpaca import AlpacaBrokerage
from core.brokerage import OrderRequest, Side
from core.events import EventType
from core.settings import Settings
from core.signals import Signal
from core.states import OrderState, TransitionCause
from db.engine import Database
from db.models import EventRecord, Fill, Order, OrderTransition, Position, ReviewItem
from db.order_manager import OrderManager
from db.ownership import claim, current_owner
from db.strategies import strategy_by_name
from service_layer.position_check import reconcile_positions
from service_layer.reconciliation import NEVER_RECEIVED, reconcile_open_orders
from service_layer.recovery import MAX_REDRIVES, expire_ownership, find_stalled, startup_recovery
from service_layer.submission import request_for
from tests.fixtures.simulator import Simulator, wait_for

S = OrderState
ACTOR = "test"
GRACE_S = 60.0
PATH = (S.VALIDATING, S.ORDER_PENDING, S.ORDER_SENT)


@dataclass(frozen=True)
class Built:
    id: int
    client_order_id: str


def build_order(
    db: Database,
    *,
    to: OrderState,
    ticker: str = "AAPL",
    quantity: str = "10",
    side: str = "buy",
    strategy: str = "trading",
    attempts: int = 0,
    last_submit_at: datetime | None = None,
    brokerage_order_id: str | None = None,
    with_claim: bool = False,
    signal_id: str | None = None,
) -> Built:
    """An order walked from SIGNAL_RECEIVED to `to` through the OrderManager."""
    signal = Signal.parse(
        {
            "strategy": strategy,
            "signal_id": signal_id or f"sig-{uuid.uuid4().hex[:12]}",
            "ticker": ticker,
            "side": side,
            "quantity": quantity,
        }
    )
    with db.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        strat = strategy_by_name(uow.session, strategy)
        order, _ = manager.create_from_signal(signal, strat, actor=ACTOR)
        if with_claim:
            assert strat is not None
            claim(uow.session, ticker, strat, order.id, reason="test claim")
        for state in PATH[: PATH.index(to) + 1] if to in PATH else ():
            changes = {}
            if state is S.ORDER_SENT:
                changes["brokerage_order_id"] = brokerage_order_id
            manager.transition(order, state, reason="test", actor=ACTOR,
                cause=TransitionCause.OPERATOR, **changes)
        if attempts:
            manager.update(
                order,
                submit_attempts=attempts,
                last_submit_at=last_submit_at or datetime.now(UTC),
            )
        uow.commit()
        return Built(order.id, order.client_order_id)


def order_row(db: Database, order_id: int) -> Order:
    with db.unit_of_work() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        return order


def place(db: Database, brokerage: AlpacaBrokerage, built: Built) -> str:
    """Send the order to the simulator as a worker would have; its brokerage order id."""
    order = order_row(db, built.id)
    return brokerage.submit(request_for(order)).brokerage_order_id


def sent_order(
    db: Database,
    brokerage: AlpacaBrokerage,
    *,
    ticker: str = "AAPL",
    quantity: str = "10",
    strategy: str = "trading",
) -> tuple[Built, str]:
    """An order the simulator accepted and Arbiter recorded as ORDER_SENT."""
    built = build_order(
        db, to=S.ORDER_PENDING, ticker=ticker, quantity=quantity, strategy=strategy, attempts=1
    )
    broker_id = place(db, brokerage, built)
    with db.unit_of_work() as uow:
        OrderManager(uow.session).transition(
            built.id, S.ORDER_SENT, reason="accepted", actor=ACTOR,
                cause=TransitionCause.BROKERAGE_REPORT, brokerage_order_id=broker_id
        )
        uow.commit()
    return built, broker_id


def many_sent_orders(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage, n: int, ticker: str
) -> list[tuple[int, str]]:
    """`n` orders accepted by the simulator and recorded ORDER_SENT (bulk: two transactions)."""
    with db.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        strategy = strategy_by_name(uow.session, "trading")
        orders = []
        for i in range(n):
            signal = Signal.parse(
                {
                    "strategy": "trading",
                    "signal_id": f"bulk-{i}",
                    "ticker": ticker,
                    "side": "buy",
                    "quantity": "1",
                }
            )
            order, _ = manager.create_from_signal(signal, strategy, actor=ACTOR)
            manager.transition(order, S.VALIDATING, reason="test", actor=ACTOR,
                cause=TransitionCause.OPERATOR)
            manager.transition(order, S.ORDER_PENDING, reason="test", actor=ACTOR,
                cause=TransitionCause.OPERATOR)
            manager.update(order, submit_attempts=1, last_submit_at=datetime.now(UTC))
            orders.append(order)
        requests = [request_for(o) for o in orders]
        uow.commit()
    # Four clients in parallel: placing 1,200 orders one by one dominates the test otherwise.
    clients = [simulator.brokerage() for _ in range(4)]
    with ThreadPoolExecutor(len(clients)) as pool:
        chunks = [requests[i :: len(clients)] for i in range(len(clients))]
        placed = pool.map(
            lambda pair: {r.client_order_id: pair[0].submit(r).brokerage_order_id for r in pair[1]},
            zip(clients, chunks, strict=True),
        )
        by_coid = {k: v for chunk in placed for k, v in chunk.items()}
    broker_ids = [by_coid[r.client_order_id] for r in requests]
    with db.unit_of_work() as uow:
        manager = OrderManager(uow.session)
        for order, broker_id in zip(orders, broker_ids, strict=True):
            manager.transition(
                order.id,
                S.ORDER_SENT,
                reason="accepted",
                actor=ACTOR, cause=TransitionCause.BROKERAGE_REPORT,
                brokerage_order_id=broker_id,
            )
        uow.commit()
    return [(o.id, b) for o, b in zip(orders, broker_ids, strict=True)]


def count(db: Database, model: type, *where: object) -> int:
    with db.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def events_of(db: Database, event_type: EventType) -> list[EventRecord]:
    with db.unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(EventRecord)
                .where(EventRecord.type == event_type.value)
                .order_by(EventRecord.seq)
            )
        )


def our_positions(db: Database) -> dict[str, Decimal]:
    with db.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Position.ticker, func.sum(Position.quantity)).group_by(Position.ticker)
        )
        return {t: q for t, q in rows if q}


def reconcile(db: Database, brokerage: AlpacaBrokerage, **kwargs: object):  # type: ignore[no-untyped-def]
    return reconcile_open_orders(db, brokerage, never_received_grace_s=GRACE_S, **kwargs)  # type: ignore[arg-type]


# -- open orders -----------------------------------------------------------------------------


def test_fills_made_while_no_worker_ran_are_applied_exactly_once(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.pause_fills()
    orders = [
        sent_order(db, brokerage, ticker="AAPL", quantity="10", strategy="trading"),
        sent_order(db, brokerage, ticker="MSFT", quantity="5", strategy="trading"),
        sent_order(db, brokerage, ticker="NVDA", quantity="2.5", strategy="long_term"),
    ]
    simulator.admin.resume_fills()
    wait_for(lambda: all(o["status"] == "filled" for o in simulator.admin.orders()))

    first = reconcile(db, brokerage)
    second = reconcile(db, brokerage)

    assert (first.fills_applied, first.transitioned) == (3, 3)
    assert (second.fills_applied, second.transitioned, second.flagged) == (0, 0, 0)
    for built, _ in orders:
        order = order_row(db, built.id)
        assert order.state == S.FULLY_FILLED.value
        assert count(db, Fill, Fill.order_id == built.id) == 1
    theirs = {p.symbol: p.quantity for p in brokerage.list_positions()}
    assert (
        our_positions(db)
        == theirs
        == {"AAPL": Decimal(10), "MSFT": Decimal(5), "NVDA": Decimal("2.5")}
    )


def test_a_partial_fill_then_the_rest_are_each_booked_once(
    db: Database, simulator_factory: object
) -> None:
    # The first of two slices comes after 3 s; fills are paused as soon as it is seen.
    sim: Simulator = simulator_factory(partial_slices=2, fill_latency_ms=3_000)  # type: ignore[operator]
    brokerage = sim.brokerage()
    built, broker_id = sent_order(db, brokerage, quantity="10")
    wait_for(lambda: sim.admin.orders()[0]["status"] == "partially_filled")
    sim.admin.pause_fills()

    partial = reconcile(db, brokerage)
    assert order_row(db, built.id).state == S.PARTIAL_FILLED.value
    assert order_row(db, built.id).filled_quantity == Decimal(5)
    sim.admin.fill(broker_id)
    done = reconcile(db, brokerage)
    reconcile(db, brokerage)

    assert (partial.fills_applied, done.fills_applied) == (1, 1)
    assert order_row(db, built.id).state == S.FULLY_FILLED.value
    assert count(db, Fill, Fill.order_id == built.id) == 2
    assert our_positions(db) == {"AAPL": Decimal(10)}


def test_pending_order_the_brokerage_accepted_before_a_crash_is_settled(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    filled = build_order(db, to=S.ORDER_PENDING, ticker="AAPL", attempts=1)
    place(db, brokerage, filled)  # accepted, then the worker died before recording it
    simulator.admin.pause_fills()
    resting = build_order(db, to=S.ORDER_PENDING, ticker="MSFT", attempts=2)
    resting_broker_id = place(db, brokerage, resting)

    result = reconcile(db, brokerage)
    reconcile(db, brokerage)

    assert order_row(db, filled.id).state == S.FULLY_FILLED.value
    rest = order_row(db, resting.id)
    assert (rest.state, rest.brokerage_order_id) == (S.ORDER_SENT.value, resting_broker_id)
    assert result.fills_applied == 1
    for built in (filled, resting):
        assert len(simulator.admin.orders(built.client_order_id)) == 1


def backdate(db: Database, order_id: int, seconds: float) -> None:
    """Move the order's times `seconds` into the past, on the database's clock (the
    updated_at trigger is bypassed for this one statement's transaction)."""
    with db.unit_of_work() as uow:
        uow.session.execute(text("SET LOCAL session_replication_role = replica"))
        uow.session.execute(
            text(
                "UPDATE orders SET updated_at = updated_at - make_interval(secs => :s), "
                "created_at = created_at - make_interval(secs => :s), "
                "last_submit_at = last_submit_at - make_interval(secs => :s) WHERE id = :id"
            ),
            {"s": seconds, "id": order_id},
        )
        uow.commit()


def test_pending_order_unknown_at_the_brokerage_fails_only_after_the_grace_period(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    built = build_order(db, to=S.ORDER_PENDING, ticker="TSLA", attempts=1, with_claim=True)
    backdate(db, built.id, GRACE_S / 2)

    early = reconcile(db, brokerage)
    assert order_row(db, built.id).state == S.ORDER_PENDING.value
    assert early.failed_never_received == 0
    with db.unit_of_work() as uow:
        assert current_owner(uow.session, "TSLA") is not None

    backdate(db, built.id, GRACE_S / 2 + 1)
    late = reconcile(db, brokerage)

    order = order_row(db, built.id)
    assert (order.state, order.reason) == (S.FAILED.value, NEVER_RECEIVED)
    assert late.failed_never_received == 1
    with db.unit_of_work() as uow:
        assert current_owner(uow.session, "TSLA") is None
    assert [e.ticker for e in events_of(db, EventType.OWNERSHIP_RELEASED)] == ["TSLA"]
    assert [e.order_id for e in events_of(db, EventType.ORDER_FAILED)] == [built.id]
    assert simulator.admin.orders(built.client_order_id) == []


def test_a_fill_that_raced_our_cancel_is_applied_and_flagged(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.pause_fills()
    built, broker_id = sent_order(db, brokerage, ticker="AMD", quantity="4")
    with db.unit_of_work() as uow:  # Arbiter cancels (e.g. the kill switch) ...
        OrderManager(uow.session).transition(
            built.id, S.CANCELLED, reason="kill switch", actor="cli",
                cause=TransitionCause.KILL_SWITCH
        )
        uow.commit()
    simulator.admin.fill(broker_id)  # ... but the brokerage filled it first

    reconcile(db, brokerage)
    reconcile(db, brokerage)

    order = order_row(db, built.id)
    assert order.state == S.CANCELLED.value
    assert order.filled_quantity == Decimal(4)
    assert order.needs_manual_review
    assert count(db, Fill, Fill.order_id == built.id) == 1
    assert count(db, ReviewItem, ReviewItem.order_id == built.id) == 1
    assert our_positions(db) == {"AMD": Decimal(4)}


def test_a_cancel_the_brokerage_reported_is_not_watched_whoever_reconciled_it(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    """The audit row records the brokerage's word as the cause, so an operator's
    `arbiter reconcile` (actor cli.reconcile) settles a cancel exactly as the beat does."""
    simulator.admin.pause_fills()
    built, broker_id = sent_order(db, brokerage, ticker="CSCO", quantity="3")
    brokerage.cancel(broker_id)

    assert reconcile(db, brokerage, actor="cli.reconcile").transitioned == 1

    with db.unit_of_work() as uow:
        audit = uow.session.scalars(
            select(OrderTransition).where(OrderTransition.order_id == built.id)
            .order_by(OrderTransition.id.desc())
        ).first()
    assert audit is not None
    assert (audit.to_state, audit.actor, audit.cause) == (
        S.CANCELLED.value, "cli.reconcile", TransitionCause.BROKERAGE_REPORT.value)
    assert reconcile(db, brokerage).checked == 0  # settled: no longer asked about


def test_a_cancel_arbiter_decided_stays_watched_for_late_fills(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.pause_fills()
    built, _ = sent_order(db, brokerage, ticker="ADBE", quantity="3")
    with db.unit_of_work() as uow:
        OrderManager(uow.session).transition(
            built.id, S.CANCELLED, reason="operator cancelled", actor="cli.reconcile",
            cause=TransitionCause.OPERATOR)
        uow.commit()

    assert reconcile(db, brokerage).checked == 1


def test_a_brokerage_order_with_our_prefix_and_no_order_here_is_one_review_item(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.pause_fills()
    stray = f"arb-{uuid.uuid4().hex}"
    brokerage.submit(OrderRequest(stray, "IBM", Side.BUY, Decimal(1)))
    brokerage.submit(OrderRequest("placed-by-hand-1", "IBM", Side.BUY, Decimal(1)))

    first = reconcile(db, brokerage)
    second = reconcile(db, brokerage)

    assert (first.orphans, second.orphans) == (1, 0)
    with db.unit_of_work() as uow:
        items = list(uow.session.scalars(select(ReviewItem).where(ReviewItem.kind == "order")))
    assert [(i.order_id, i.ticker, i.details["client_order_id"]) for i in items] == [
        (None, "IBM", stray)
    ]
    [event] = events_of(db, EventType.RECONCILIATION_MISMATCH)
    assert (event.client_order_id, event.payload["kind"]) == (stray, "unknown_order")


def test_ten_thousand_open_orders_cost_a_handful_of_calls(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    simulator.admin.pause_fills()
    total, closed = 1_200, 15
    built = many_sent_orders(db, simulator, brokerage, total, "SPY")
    for _, broker_id in built[:closed]:  # these filled while nobody looked
        simulator.admin.fill(broker_id)

    first = reconcile(db, brokerage)
    second = reconcile(db, brokerage)
    print("first pass", first.counts(), "second pass", second.counts())

    assert first.checked == total
    assert first.fills_applied == closed
    assert first.brokerage_calls <= 10, first.counts()
    assert second.brokerage_calls <= 10, second.counts()
    assert (second.fills_applied, second.transitioned) == (0, 0)
    assert count(db, Order, Order.state == S.FULLY_FILLED.value) == closed
    assert count(db, Order, Order.state == S.ORDER_SENT.value) == total - closed


# -- stalled orders --------------------------------------------------------------------------


def test_stalled_orders_are_listed_with_the_step_they_resume_from(db: Database) -> None:
    received = build_order(db, to=S.SIGNAL_RECEIVED)
    validating = build_order(db, to=S.VALIDATING)
    pending = build_order(db, to=S.ORDER_PENDING)
    attempted = build_order(db, to=S.ORDER_PENDING, attempts=1)  # reconciliation's business

    assert find_stalled(db, stalled_after_s=30).redrive == []
    for built in (received, validating, pending, attempted):
        backdate(db, built.id, 60)
    later = find_stalled(db, stalled_after_s=30).redrive

    assert sorted(later) == [
        (received.id, "validate"),
        (validating.id, "check_conflict"),
        (pending.id, "submit"),
    ]
    assert attempted.id not in {order_id for order_id, _ in later}


def test_an_order_stalled_too_often_goes_to_review_instead(db: Database) -> None:
    built = build_order(db, to=S.VALIDATING)
    passes = []
    for _ in range(MAX_REDRIVES + 2):
        backdate(db, built.id, 60)
        passes.append(find_stalled(db, stalled_after_s=30).redrive)

    assert [len(p) for p in passes] == [1] * MAX_REDRIVES + [0, 0]
    order = order_row(db, built.id)
    assert order.needs_manual_review and "re-drives" in (order.reason or "")
    assert count(db, ReviewItem, ReviewItem.order_id == built.id) == 1


# -- positions -------------------------------------------------------------------------------


def test_a_position_changed_behind_our_back_is_one_mismatch_and_one_review_item(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    sent_order(db, brokerage, ticker="AAPL", quantity="3")  # fills at once: both sides agree
    reconcile(db, brokerage)
    simulator.admin.adjust_position("IBM", qty=7, price=100)

    first = reconcile_positions(db, brokerage)
    assert [(m.ticker, m.ours, m.theirs, m.confirmed) for m in first] == [
        ("IBM", Decimal(0), Decimal(7), False)
    ]
    assert events_of(db, EventType.RECONCILIATION_MISMATCH) == []

    second = reconcile_positions(db, brokerage)
    third = reconcile_positions(db, brokerage)

    assert [(m.ticker, m.confirmed, m.review_opened) for m in second] == [("IBM", True, True)]
    assert [(m.ticker, m.confirmed, m.review_opened) for m in third] == [("IBM", True, False)]
    assert count(db, ReviewItem, ReviewItem.kind == "position", ReviewItem.ticker == "IBM") == 1
    [event] = events_of(db, EventType.RECONCILIATION_MISMATCH)
    assert (event.ticker, event.payload["ours"], event.payload["theirs"]) == ("IBM", "0", "7")


def test_a_difference_that_goes_away_by_the_next_pass_is_never_reported(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    built, _ = sent_order(db, brokerage, ticker="AAPL", quantity="3")  # filled, not yet booked

    racing = reconcile_positions(db, brokerage)
    reconcile(db, brokerage)  # the fill is booked
    after = reconcile_positions(db, brokerage)

    assert [(m.ticker, m.confirmed) for m in racing] == [("AAPL", False)]
    assert after == []
    assert count(db, ReviewItem, ReviewItem.kind == "position") == 0
    assert order_row(db, built.id).state == S.FULLY_FILLED.value


# -- ownership and start-up ------------------------------------------------------------------


def test_stale_claims_are_released_and_live_ones_kept(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    build_order(db, to=S.ORDER_PENDING, ticker="ORCL", with_claim=True)  # live order: kept
    stale = build_order(db, to=S.ORDER_PENDING, ticker="INTC", with_claim=True)
    with db.unit_of_work() as uow:
        OrderManager(uow.session).transition(stale.id, S.CANCELLED, reason="test", actor=ACTOR,
            cause=TransitionCause.OPERATOR)
        uow.commit()

    assert expire_ownership(db) == 1
    assert expire_ownership(db) == 0
    with db.unit_of_work() as uow:
        assert current_owner(uow.session, "ORCL") is not None
        assert current_owner(uow.session, "INTC") is None


def test_startup_recovery_runs_between_started_and_completed_with_counts(
    db: Database, simulator: Simulator, brokerage: AlpacaBrokerage
) -> None:
    settings = Settings(never_received_grace_s=0.5, brokerage_timeout_s=0.2, stalled_after_s=0)
    filled = build_order(db, to=S.ORDER_PENDING, ticker="AAPL", attempts=1)
    place(db, brokerage, filled)
    lost = build_order(
        db,
        to=S.ORDER_PENDING,
        ticker="MSFT",
        attempts=1,
        last_submit_at=datetime.now(UTC) - timedelta(seconds=5),
    )
    stalled = build_order(db, to=S.VALIDATING, ticker="NVDA")

    counts = startup_recovery(db, brokerage, settings, relay=lambda: 0)

    assert order_row(db, filled.id).state == S.FULLY_FILLED.value
    assert order_row(db, lost.id).state == S.FAILED.value
    assert counts["failed"] == 1
    assert counts["redrive"] == [[stalled.id, "check_conflict"]]
    assert counts["recovered"] >= 2
    [started] = events_of(db, EventType.RECOVERY_STARTED)
    [completed] = events_of(db, EventType.RECOVERY_COMPLETED)
    assert started.seq < completed.seq
    assert completed.payload["failed"] == 1
