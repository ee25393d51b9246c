"""`arbiter reconcile`: one reconciliation pass now, in this process, and what it changed."""

from __future__ import annotations

from dataclasses import asdict

from arbiter.commands import common
from core.errors import BrokerageUnavailable
from service_layer import position_check
from service_layer import reconciliation as service

ACTOR = "cli.reconcile"
CHANGE_COLUMNS = ("order_id", "client_order_id", "ticker", "before", "after", "filled", "note")
MISMATCH_COLUMNS = ("ticker", "ours", "theirs", "by_strategy", "confirmed", "review_opened")


def reconcile(as_json: common.AsJson = False) -> None:
    """Reconcile open orders and positions with the brokerage now and print what changed.

    A position difference becomes a review item only once two passes (this one and the
    previous, beat's or CLI's) saw the same quantities; this prints it either way."""
    with common.guarded(), common.runtime() as rt:
        try:
            orders = service.reconcile_open_orders(
                rt.database,
                rt.brokerage,
                never_received_grace_s=rt.settings.never_received_grace_s,
                actor=ACTOR,
            )
            mismatches = position_check.reconcile_positions(rt.database, rt.brokerage)
        except BrokerageUnavailable as exc:
            url = rt.settings.brokerage_url
            common.fail(f"cannot reach the brokerage at {url}: {exc}", code=1)
    changes = [asdict(c) for c in orders.changes]
    positions = [asdict(m) for m in mismatches]
    if as_json:
        common.print_json({"orders": orders.counts(), "changes": changes, "positions": positions})
        return
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in orders.counts().items())
    common.console.print(f"orders: {counts}")
    common.show_rows(
        changes,
        as_json=False,
        columns=CHANGE_COLUMNS,
        title="orders changed",
        empty="no order changed",
    )
    common.show_rows(
        positions,
        as_json=False,
        columns=MISMATCH_COLUMNS,
        title="position mismatches",
        empty="positions agree with the brokerage",
    )
