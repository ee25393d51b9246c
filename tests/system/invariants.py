"""The invariants a chaos run must leave intact (see tests/system/chaos.py), checked against
the order store and the simulator's own records.

  I1 one brokerage order per client_order_id; one Arbiter order per (strategy, signal_id)
  I3 every brokerage order has its Arbiter order; states, filled quantities and average prices
     agree; fills sum to the filled quantity; positions per ticker equal the brokerage's
  I4 ownership intervals per ticker never overlap
  I5 every transition's event is in the history exactly once; the subscriber saw every event
  I6 every audit trail is a valid path through the state table ending in the order's state
  I7 every order with a cancel requested is final (or in review)
  I8 every protective stop that filled announced POSITION_STOP_LOSS_TRIGGERED exactly once
(I2, every accepted signal settled within a bound, is the runner's bounded wait.)
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from core.brokerage import state_for_status
from core.events import transition_event_type
from core.states import TERMINAL_STATES, OrderState, is_valid_path
from db.engine import Database
from db.models import EventRecord, Fill, Order, OrderTransition, Position, TickerOwnership
from tests.fixtures.simulator import Simulator


def check_invariants(
    db: Database, sim: Simulator, sent: list[dict[str, Any]], seen: Counter[str]
) -> list[str]:
    """I1 and I3-I8 (I2 is the bounded wait); one string per violation."""
    v: list[str] = []
    with db.unit_of_work() as uow:
        s = uow.session
        orders = list(s.scalars(select(Order)))
        trails: dict[int, list[OrderTransition]] = defaultdict(list)
        for row in s.scalars(select(OrderTransition).order_by(OrderTransition.id)):
            trails[row.order_id].append(row)
        fills: dict[int, Decimal] = defaultdict(Decimal)
        signed: dict[str, Decimal] = defaultdict(Decimal)
        by_id = {o.id: o for o in orders}
        for fill in s.scalars(select(Fill)):
            fills[fill.order_id] += fill.quantity
            order = by_id[fill.order_id]
            signed[order.ticker or ""] += fill.quantity if order.side == "buy" else -fill.quantity
        positions: dict[str, Decimal] = defaultdict(Decimal)
        for p in s.scalars(select(Position)):
            positions[p.ticker] += p.quantity
        ownership = list(s.scalars(select(TickerOwnership)))
        events = list(
            s.execute(
                select(
                    EventRecord.id,
                    EventRecord.type,
                    EventRecord.order_id,
                    EventRecord.payload,
                    EventRecord.published_at,
                )
            )
        )
    by_coid = {o.client_order_id: o for o in orders}
    broker = sim.admin.orders()

    # I1
    at_broker = Counter(o["client_order_id"] for o in broker)
    v += [f"I1: {n} brokerage orders for {c}" for c, n in at_broker.items() if n > 1]
    per_signal = Counter((o.strategy_name, o.signal_id) for o in orders)
    v += [f"I1: {n} Arbiter orders for {k}" for k, n in per_signal.items() if n > 1]
    attempted = {r["coid"] for r in sent}
    v += [
        f"I1: order {o.client_order_id} from no signal sent"
        for o in orders
        if o.client_order_id not in attempted
    ]
    for r in sent:
        if r["outcome"] == "invalid" and r["coid"] in by_coid:
            v.append(f"I1: {r['coid']} was refused at the client but recorded")
        if (
            r["kind"] == "raw_bad"
            and r["outcome"] == "accepted"
            and r["coid"] in by_coid
            and by_coid[r["coid"]].state != "REJECTED"
        ):
            v.append(f"I1: malformed {r['coid']} ended {by_coid[r['coid']].state}")

    # I3
    for b in broker:
        ours = by_coid.get(b["client_order_id"])
        if ours is None:
            v.append(f"I3: brokerage order {b['client_order_id']} has no Arbiter order")
            continue
        want = state_for_status(b["status"]).value
        qty, avg = Decimal(b["filled_qty"]), b["filled_avg_price"]
        if ours.state != want:
            v.append(
                f"I3: {ours.client_order_id} is {ours.state}{_review(ours)}, the brokerage "
                f"says {b['status']}"
            )
        if ours.filled_quantity != qty:
            v.append(f"I3: {ours.client_order_id} filled {ours.filled_quantity}, brokerage {qty}")
        if qty and (
            ours.avg_fill_price is None or abs(ours.avg_fill_price - Decimal(avg)) > Decimal("1e-6")
        ):
            v.append(f"I3: {ours.client_order_id} avg {ours.avg_fill_price}, brokerage {avg}")
    for o in orders:
        if o.client_order_id not in at_broker and (
            o.filled_quantity
            or o.brokerage_order_id
            or o.state in ("ORDER_SENT", "PARTIAL_FILLED", "FULLY_FILLED")
        ):
            v.append(f"I3: {o.client_order_id} ({o.state}) unknown to the brokerage")
        if fills[o.id] != o.filled_quantity:
            v.append(
                f"I3: {o.client_order_id} fills sum to {fills[o.id]}, order says "
                f"{o.filled_quantity}"
            )
    theirs = {p["symbol"]: Decimal(p["qty"]) for p in sim.admin.positions()}
    for ticker in set(theirs) | set(positions) | set(signed):
        mine, fills_net, broker_qty = (
            positions.get(ticker, Decimal(0)),
            signed.get(ticker, Decimal(0)),
            theirs.get(ticker, Decimal(0)),
        )
        if not mine == fills_net == broker_qty:
            v.append(
                f"I3: {ticker}: strategies hold {mine}, fills net {fills_net}, the "
                f"brokerage {broker_qty}"
            )

    # I4
    per_ticker: dict[str, list[TickerOwnership]] = defaultdict(list)
    for owner in ownership:
        per_ticker[owner.ticker].append(owner)
    for ticker, owners in per_ticker.items():
        owners.sort(key=lambda r: r.acquired_at)
        for first, then in itertools.pairwise(owners):
            if first.released_at is None or first.released_at > then.acquired_at:
                v.append(
                    f"I4: {ticker} owned by strategy {first.strategy_id} (from "
                    f"{first.acquired_at}, released {first.released_at}) and "
                    f"{then.strategy_id} (from {then.acquired_at}) at once"
                )

    # I5
    expected: Counter[tuple[int, str, str, str]] = Counter()
    for order_id, trail in trails.items():
        for t in trail:
            kind = transition_event_type(OrderState(t.from_state), OrderState(t.to_state))
            if kind is not None:
                expected[(order_id, kind.value, t.from_state, t.to_state)] += 1
    recorded: Counter[tuple[int, str, str, str]] = Counter(
        (e.order_id, e.type, e.payload.get("from_state"), e.payload.get("to_state"))
        for e in events
        if e.order_id is not None and "to_state" in (e.payload or {})
    )
    for key in set(expected) | set(recorded):
        if expected[key] != recorded[key]:
            v.append(
                f"I5: order {key[0]} {key[2]}->{key[3]}: {expected[key]} transitions, "
                f"{recorded[key]} {key[1]} events"
            )
    ids = Counter(str(e.id) for e in events)
    v += [f"I5: event {i} {n} times in the history" for i, n in ids.items() if n > 1]
    v += [f"I5: event {e.id} ({e.type}) never published" for e in events if e.published_at is None]
    wait_until(lambda: all(str(e.id) in seen for e in events), 30)
    v += [
        f"I5: the subscriber never saw {e.id} ({e.type}, order {e.order_id})"
        for e in events
        if str(e.id) not in seen
    ]
    v += [f"I5: the subscriber was handed {i} {n} times" for i, n in seen.items() if n > 1]

    # I6
    for o in orders:
        trail = trails.get(o.id, [])
        path = (
            [OrderState(trail[0].from_state), *(OrderState(t.to_state) for t in trail)]
            if trail
            else []
        )
        joined = all(a.to_state == b.from_state for a, b in itertools.pairwise(trail))
        if (
            not trail
            or path[0] is not OrderState.IDLE
            or not joined
            or not is_valid_path(path)
            or path[-1].value != o.state
        ):
            v.append(
                f"I6: {o.client_order_id} ({o.state}) has trail "
                f"{' -> '.join(p.value for p in path) or 'none'}"
            )

    # I7
    terminal = {state.value for state in TERMINAL_STATES}
    v += [
        f"I7: {o.client_order_id} had a cancel requested and is still {o.state}"
        for o in orders
        if o.cancel_requested_at is not None
        and o.state not in terminal
        and not o.needs_manual_review
    ]

    # I8
    triggered = Counter(e.order_id for e in events if e.type == "position_stop_loss_triggered")
    v += [
        f"I8: protective {o.client_order_id} filled {o.filled_quantity} with "
        f"{triggered[o.id]} stop-loss events"
        for o in orders
        if o.protective and (o.filled_quantity > 0) != (triggered[o.id] == 1)
    ]
    v += [
        f"I8: a stop-loss event for order {order_id}, which is not protective"
        for order_id in triggered
        if order_id not in by_id or not by_id[order_id].protective
    ]
    return v


def _review(order: Order) -> str:
    return f" (in review: {order.reason})" if order.needs_manual_review else ""


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
