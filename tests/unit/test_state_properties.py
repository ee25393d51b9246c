"""Properties of the pure core under brokerage reports that arrive late, twice and out of order.

A hypothesis state machine drives one order: the brokerage fills it in slices (and may cancel
the rest, or fill after Arbiter cancelled on its own side, the cancel race); each snapshot it
reports can be delivered any number of times, in any order. Arbiter's side applies each
delivered report through core/settlement.plan_settlement, the plan that
service_layer/settlement.settle carries out, applying its steps to an in-memory order and
position; the integration twin of this test, tests/integration/test_settlement_properties.py,
runs the real settle on Postgres.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from core.brokerage import BrokerOrder, Side, state_for_status
from core.positions import PositionState, apply_fill
from core.settlement import BookFill, Move, plan_settlement
from core.states import TERMINAL_STATES, TRANSITIONS, OrderState, can_transition, is_valid_path

S = OrderState
QUANTITY = Decimal(100)
prices = st.decimals(min_value=Decimal("1"), max_value=Decimal("500"), places=2)


def test_every_brokerage_status_maps_onto_a_state_with_a_way_in() -> None:
    for status in ("new", "accepted", "partially_filled", "filled", "canceled", "expired",
                   "rejected", "done_for_day", "pending_cancel"):
        state = state_for_status(status)
        assert any(state in targets for targets in TRANSITIONS.values())


class OrderUnderReports(RuleBasedStateMachine):
    """Brokerage truth on one side, Arbiter's view (state, fills, position) on the other."""

    @initialize(side=st.sampled_from([Side.BUY, Side.SELL]))
    def start(self, side: Side) -> None:
        self.side = side
        # Arbiter: the order is pending submission; a sell starts from a held position.
        self.path = [S.IDLE, S.SIGNAL_RECEIVED, S.VALIDATING, S.ORDER_PENDING]
        self.filled = Decimal(0)
        self.avg: Decimal | None = None
        self.position = PositionState(QUANTITY, Decimal(10)) if side is Side.SELL else \
            PositionState()
        self.start_quantity = self.position.quantity
        self.increments: list[Decimal] = []
        self.flagged: list[str] = []
        self.cancelled_locally = False
        self.filled_at_cancel = Decimal(0)
        # Brokerage: cumulative fills and status, and every snapshot it ever reported.
        self.b_filled = Decimal(0)
        self.b_cost = Decimal(0)
        self.b_status = "new"
        self.snapshots: list[BrokerOrder] = [self._snapshot()]
        self.max_delivered = Decimal(0)

    # -- the brokerage ---------------------------------------------------------------------

    def _snapshot(self) -> BrokerOrder:
        avg = (self.b_cost / self.b_filled).quantize(Decimal("0.000000001")) \
            if self.b_filled else None
        return BrokerOrder("b-1", "arb-1", "AAPL", self.side, QUANTITY, self.b_status,
                           self.b_filled, avg)

    @precondition(lambda self: self.b_status in ("new", "partially_filled"))
    @rule(slice_=st.integers(min_value=1, max_value=100), price=prices)
    def brokerage_fills(self, slice_: int, price: Decimal) -> None:
        quantity = min(Decimal(slice_), QUANTITY - self.b_filled)
        self.b_filled += quantity
        self.b_cost += quantity * price
        self.b_status = "filled" if self.b_filled == QUANTITY else "partially_filled"
        self.snapshots.append(self._snapshot())

    @precondition(lambda self: self.b_status in ("new", "partially_filled"))
    @rule()
    def brokerage_cancels_the_rest(self) -> None:
        self.b_status = "canceled"
        self.snapshots.append(self._snapshot())

    # -- Arbiter ---------------------------------------------------------------------------

    @precondition(lambda self: self.state in (S.ORDER_PENDING, S.ORDER_SENT, S.PARTIAL_FILLED))
    @rule()
    def arbiter_cancels_on_its_own(self) -> None:
        """E.g. the kill switch: Arbiter holds CANCELLED while the brokerage may still fill."""
        self._move(S.CANCELLED)
        self.cancelled_locally = True
        self.filled_at_cancel = self.filled

    @rule(data=st.data())
    def a_report_arrives(self, data: st.DataObject) -> None:
        """Any snapshot, any number of times: late, duplicated, out of order."""
        report = data.draw(st.sampled_from(self.snapshots))
        before = (self.state, self.filled)
        self._settle(report)
        self.max_delivered = max(self.max_delivered, report.filled_quantity)
        assert self.filled >= before[1], "cumulative filled quantity went down"
        if before[0] in TERMINAL_STATES:
            assert self.state is before[0], f"left terminal {before[0]} for {self.state}"

    @property
    def state(self) -> OrderState:
        return self.path[-1]

    def _move(self, target: OrderState) -> None:
        assert can_transition(self.state, target), f"{self.state} -> {target}"
        self.path.append(target)

    def _settle(self, report: BrokerOrder) -> None:
        for step in plan_settlement(self.state, self.filled, self.avg, report).steps:
            if isinstance(step, Move):
                self._move(step.target)
            elif isinstance(step, BookFill):
                self.filled, self.avg = step.filled_quantity, step.avg_fill_price
                self.position = apply_fill(self.position, self.side, step.increment.quantity,
                                           step.increment.price)
                self.increments.append(step.increment.quantity)
            else:
                self.flagged.append(step.reason)

    # -- what must always hold ----------------------------------------------------------------

    @invariant()
    def no_fill_is_dropped(self) -> None:
        assert self.filled == self.max_delivered

    @invariant()
    def the_position_is_the_sum_of_the_applied_increments(self) -> None:
        assert sum(self.increments, Decimal(0)) == self.filled
        sign = 1 if self.side is Side.BUY else -1
        assert self.position.quantity == self.start_quantity + sign * self.filled

    @invariant()
    def the_audit_trail_is_a_valid_path(self) -> None:
        assert is_valid_path(self.path)

    @invariant()
    def a_fill_after_arbiter_cancelled_is_applied_and_flagged(self) -> None:
        if self.cancelled_locally and self.filled > self.filled_at_cancel:
            assert self.flagged, "a fill after Arbiter's cancel went unreviewed"

    @invariant()
    def a_filled_order_at_the_brokerage_is_filled_here_once_its_report_arrives(self) -> None:
        if self.max_delivered == QUANTITY and not self.cancelled_locally:
            assert self.state is S.FULLY_FILLED


TestOrderUnderReports = OrderUnderReports.TestCase
TestOrderUnderReports.settings = settings(max_examples=200, stateful_step_count=30,
                                          deadline=None)
