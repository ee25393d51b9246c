"""Booking the brokerage's trade updates as they stream in (fill, partial_fill, canceled,
rejected, expired ...), within milliseconds of the brokerage's event.

Each update carries the order as the brokerage now holds it (cumulative filled quantity and
average price); that report goes through `service_layer.settlement.settle`, the code submission
and reconciliation use, so a fill that the stream and polling both see is booked once (keyed by
brokerage order id and cumulative quantity). Updates for orders Arbiter does not hold, or does
not expect news about, are left to reconciliation, which reports orphans and anomalies; the
stream has no replay, so catching up after a disconnect is polling's job too.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.brokerage import BrokerOrder
from core.errors import BrokerageProtocolError
from core.states import OrderState
from db.engine import Database
from db.order_manager import OrderManager
from service_layer.settlement import settle

ACTOR = "arbiter.trade_stream"
S = OrderState

# States in which the brokerage's word is expected news; any other state is settled only when
# the report brings a fill Arbiter has not booked (settle then flags it as an anomaly).
_AWAITING = frozenset({S.ORDER_PENDING.value, S.ORDER_SENT.value, S.PARTIAL_FILLED.value})


@dataclass(frozen=True)
class Booked:
    """What one trade update changed (None from `book` when it concerned nothing of ours)."""

    order_id: int
    state: str
    transitions: tuple[str, ...]
    filled: bool
    flagged: str | None


def book(database: Database, report: BrokerOrder, *, actor: str = ACTOR) -> Booked | None:
    """Settle one trade update's order report in its own transaction.

    An acceptance with nothing filled (`new`, `accepted`, `pending_new`) is submit's news: its
    POST answer records it, and the order row is locked by submit until then, so waiting here
    would only hold up the fills queued behind it. Statuses Arbiter does not know are left to
    reconciliation, which flags them."""
    try:
        target = report.state
    except BrokerageProtocolError:
        return None
    if target is S.ORDER_SENT and not report.filled_quantity:
        return None
    with database.unit_of_work() as uow:
        order = OrderManager(uow.session).lock_by_client_order_id(report.client_order_id)
        if order is None:
            return None  # not ours, or not yet committed by submit: reconciliation sees it
        if order.state not in _AWAITING and report.filled_quantity <= order.filled_quantity:
            return None
        result = settle(uow.session, order, report, actor=actor)
        uow.commit()
        return Booked(
            order.id, order.state, tuple(result.transitions), result.filled, result.flagged
        )
