"""The payload of each event type: one frozen model per kind of fact.

The envelope (core/events.py) carries a payload as a JSON object; these models say what that
object holds. Arbiter builds every payload it emits through its model, so a misspelt field is a
type error and a wrong value fails at once; subscribers read the same models back
(`Event.data()`). Which model belongs to which type is registered in core/events.py.

Arbiter's own payloads forbid unknown fields. Types that other processes publish too
(`ExternalPayload` and its subclasses) accept any further JSON fields: Arbiter cannot know what
a war room or a strategy chooses to say.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from core.brokerage import Side
from core.conflicts import Resolution
from core.states import OrderState, TransitionCause


class EventPayload(BaseModel):
    """Base of every payload: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_wire(self) -> dict[str, Any]:
        """The JSON object stored in the history and sent on the bus (decimals as strings)."""
        return self.model_dump(mode="json")


class ExternalPayload(EventPayload):
    """A type other processes may publish: any JSON object, the fields below when Arbiter
    itself sends one."""

    model_config = ConfigDict(frozen=True, extra="allow")


# -- orders ------------------------------------------------------------------------------------


class OrderTransitioned(EventPayload):
    """An order entered a new state (SIGNAL_RECEIVED, ORDER_SENT, ORDER_FILLED, ...)."""

    from_state: OrderState
    to_state: OrderState
    reason: str | None
    filled_quantity: Decimal
    avg_fill_price: Decimal | None
    cause: TransitionCause


class OrderCancelRequested(EventPayload):
    """ORDER_CANCEL_REQUESTED: a cancel of an order the brokerage holds (or may hold) was
    recorded; the order stays in `state` until the brokerage confirms."""

    state: OrderState
    requested_by: str
    actor: str
    filled_quantity: Decimal


class OrderReplaced(EventPayload):
    """ORDER_REPLACED (about the original order): its replacement, an order of its own, with
    what the replace asked for."""

    replacement_order_id: int
    replacement_client_order_id: str
    requested_by: str
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None


class OrderCorrected(EventPayload):
    """ORDER_CORRECTED: a human's audited correction of a final order to the brokerage's
    final word (core.states.CORRECTIONS)."""

    from_state: OrderState
    to_state: OrderState
    reason: str
    actor: str
    filled_quantity: Decimal


class OrderNeedsReview(EventPayload):
    reason: str
    actor: str


class RiskLimitExceeded(EventPayload):
    rule: str
    reason: str


# -- conflicts and ownership ---------------------------------------------------------------------


class ConflictDecided(EventPayload):
    """CONFLICT_DETECTED, ORDER_BLOCKED_BY_CONFLICT, PRIORITY_OVERRIDE, CONFLICT_RESOLVED: a
    strategy's order on a ticker another strategy owns, and what was decided."""

    ticker: str
    requesting_strategy_id: int
    requesting_strategy_name: str
    requesting_priority: int
    owning_strategy_id: int
    owning_strategy_name: str
    owning_priority: int
    action: Side
    resolution: Resolution
    reasoning: str


class OwnershipAcquired(EventPayload):
    ticker: str
    strategy_id: int
    strategy_name: str
    # Arbiter knows one kind of ownership (one owner per ticker); the field is kept for
    # consumers written against payloads that distinguish kinds.
    ownership_type: Literal["primary"] = "primary"
    reasoning: str
    ownership_id: int
    locked_until: datetime | None


class OwnershipTransferred(EventPayload):
    ticker: str
    from_strategy_id: int
    from_strategy_name: str
    to_strategy_id: int
    to_strategy_name: str
    reason: str
    ownership_id: int
    locked_until: datetime | None
    position_moved: Decimal
    avg_cost: Decimal


class OwnershipReleased(EventPayload):
    ticker: str
    strategy_id: int
    strategy_name: str
    reason: str
    ownership_id: int


# -- positions -----------------------------------------------------------------------------------


class PositionChanged(EventPayload):
    """POSITION_OPENED, POSITION_UPDATED, POSITION_CLOSED: one fill booked to a position."""

    side: Side
    fill_quantity: Decimal
    fill_price: Decimal
    quantity: Decimal
    avg_cost: Decimal
    realized_pnl: Decimal


class StopLossTriggered(ExternalPayload):
    """POSITION_STOP_LOSS_TRIGGERED: the owner's protective stop filled. Arbiter sends every
    field below on the stop's first fill (`quantity` at `fill_price`, of the stop's
    `order_quantity`; `lock_released`: the ticker's ownership lock ended with it); a strategy
    publishing its own may send any of them."""

    ticker: str | None = None
    strategy: str | None = None
    quantity: Decimal | None = None
    order_quantity: Decimal | None = None
    stop_price: Decimal | None = None
    fill_price: Decimal | None = None
    order_id: int | None = None
    parent_order_id: int | None = None
    lock_released: bool | None = None
    actor: str | None = None
    reason: str | None = None


class PositionAdjusted(EventPayload):
    """POSITION_ADJUSTED: a human adopted the brokerage's quantity for a position mismatch
    (`before` -> `after` for the strategy named on the envelope)."""

    reason: str
    actor: str
    review_item_id: int
    before: Decimal
    after: Decimal
    brokerage_quantity: Decimal
    avg_cost: Decimal


# -- operations ----------------------------------------------------------------------------------


class StrategyToggled(EventPayload):
    """STRATEGY_ACTIVATED / STRATEGY_DEACTIVATED (which releases the strategy's locks)."""

    reason: str | None
    released_tickers: list[str]
    # Still owned (a position is held), lock released: the next active strategy that trades
    # one of them takes it over with the position.
    unlocked_tickers: list[str] = []


class StrategyUpdated(EventPayload):
    """A strategy created (`created`, with its priority, horizon, config) or changed
    (`changes`: field -> [old, new])."""

    by: str
    reason: str | None = None
    changes: dict[str, list[Any]] | None = None
    created: bool = False
    priority: int | None = None
    horizon: str | None = None
    config: dict[str, Any] | None = None


class KillSwitchToggled(EventPayload):
    reason: str | None


class UnknownOrderMismatch(EventPayload):
    """RECONCILIATION_MISMATCH: the brokerage holds an order Arbiter has no record of."""

    kind: Literal["unknown_order"] = "unknown_order"
    reason: str
    client_order_id: str
    brokerage_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    filled_quantity: Decimal
    status: str


class PositionMismatch(EventPayload):
    """RECONCILIATION_MISMATCH: the strategies' positions in a ticker differ from the
    brokerage's (`by_strategy`: each strategy's quantity)."""

    kind: Literal["position"] = "position"
    reason: str
    ours: Decimal
    theirs: Decimal
    by_strategy: dict[str, Decimal]


class RecoveryStarted(EventPayload):
    actor: str


class RecoveryCompleted(EventPayload):
    recovered: int
    failed: int
    for_review: int
    orders: dict[str, int]
    redriven: int


class SystemChanged(ExternalPayload):
    """SYSTEM_STARTED / SYSTEM_STOPPED; Arbiter's workers name themselves in `worker`."""

    worker: str | None = None


class ErrorOccurred(ExternalPayload):
    """A failure; Arbiter's pipeline names the task that failed for good. A signal intake
    never recorded after every resend is a `dead_letter` (its reason in `error`)."""

    kind: Literal["dead_letter"] | None = None
    task: str | None = None
    task_id: str | None = None
    error: str | None = None
