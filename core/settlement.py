"""Settlement as a plan: what one brokerage report means for an order, decided without I/O.

Given the order's state, the fills Arbiter has recorded so far (cumulative quantity and average
price) and the brokerage's report, `plan_settlement` returns the steps that bring the order in
line with the brokerage, in the order they must be applied:

- `Move`: a transition (the brokerage's acceptance first, then its final or partial word);
- `BookFill`: the fill increment over what is recorded (reports are cumulative, and arrive
  late, twice or out of order, so only the increment is booked, once);
- `Review`: the report contradicts what Arbiter holds (a fill on an order it cancelled, a
  status that cannot follow the current state): a human must look. The fill is still booked:
  a fill is never dropped.

service_layer/settlement.py applies a plan under the order's row lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.brokerage import BrokerOrder
from core.positions import FillIncrement, fill_increment
from core.states import OrderState, can_transition, is_terminal

S = OrderState
ACCEPTED = "accepted by the brokerage"


@dataclass(frozen=True)
class Move:
    target: OrderState
    reason: str


@dataclass(frozen=True)
class BookFill:
    """Book `increment`; the order's cumulative fill becomes `filled_quantity` at
    `avg_fill_price` (the brokerage's figures)."""

    increment: FillIncrement
    filled_quantity: Decimal
    avg_fill_price: Decimal | None


@dataclass(frozen=True)
class Review:
    reason: str


Step = Move | BookFill | Review


@dataclass(frozen=True)
class SettlementPlan:
    steps: tuple[Step, ...] = ()

    @property
    def moves(self) -> list[Move]:
        return [step for step in self.steps if isinstance(step, Move)]

    @property
    def fill(self) -> BookFill | None:
        return next((step for step in self.steps if isinstance(step, BookFill)), None)

    @property
    def review(self) -> str | None:
        return next((step.reason for step in self.steps if isinstance(step, Review)), None)


def plan_settlement(
    state: OrderState,
    filled_quantity: Decimal,
    avg_fill_price: Decimal | None,
    report: BrokerOrder,
) -> SettlementPlan:
    """The steps that bring an order in `state`, with `filled_quantity` recorded at
    `avg_fill_price`, in line with `report`."""
    steps: list[Step] = []
    current, target = state, report.state

    # From ORDER_PENDING the brokerage's acceptance comes first.
    if current is S.ORDER_PENDING and target in (S.ORDER_SENT, S.PARTIAL_FILLED, S.FULLY_FILLED):
        steps.append(Move(S.ORDER_SENT, ACCEPTED))
        current = S.ORDER_SENT

    increment = fill_increment(
        filled_quantity, avg_fill_price, report.filled_quantity, report.avg_fill_price
    )
    if increment is not None:
        steps.append(BookFill(increment, report.filled_quantity, report.avg_fill_price))

    if is_terminal(current):
        # A new fill, or a different final word, on an order held as final is an anomaly
        # (e.g. a fill that raced Arbiter's cancel); an older, non-final snapshot arriving
        # late (submit's answer after reconciliation settled the order) is not.
        contradicts = is_terminal(target) and target is not current and target is not S.CANCELLED
        if increment is not None or contradicts:
            steps.append(
                Review(
                    f"brokerage reports {report.status} (filled {report.filled_quantity}) for "
                    f"an order Arbiter holds as {current.value}"
                )
            )
        return SettlementPlan(tuple(steps))

    if target is S.PARTIAL_FILLED and current is S.PARTIAL_FILLED and increment is None:
        return SettlementPlan(tuple(steps))  # nothing new
    if target is not current or target is S.PARTIAL_FILLED:
        if can_transition(current, target):
            said = report.reject_reason if target is S.REJECTED else None
            steps.append(Move(target, said or f"brokerage: {report.status}"))
        elif target is not S.ORDER_SENT:
            steps.append(Review(f"brokerage status {report.status} cannot follow {current.value}"))
    return SettlementPlan(tuple(steps))
