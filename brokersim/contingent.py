"""What one order's fill or end does to the orders tied to it, inside the same transaction.

- bracket / oto: the legs wait in `held` until the entry is completely filled, then go live
  (`new`); if the entry ends any other way (cancelled, expired, rejected, or cancelled after a
  partial fill) the held legs are cancelled.
- bracket legs, and the two orders of an oco: one-cancels-other. The first execution of one
  cancels the other; cancelling one cancels the other.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from brokersim.ledger import fmt_ts
from brokersim.records import StoredOrder, Update

if TYPE_CHECKING:
    from brokersim.store import Store


def oco_partners(store: Store, order: StoredOrder) -> list[StoredOrder]:
    """The open orders that one-cancels-other ties to `order`."""
    if order.order_class == "oco":
        root_id = order.parent_id or order.id
        root = store.get_order(root_id)
        group = ([root] if root else []) + store.legs_of(root_id)
    elif order.order_class == "bracket" and order.parent_id:
        group = store.legs_of(order.parent_id)
    else:
        return []
    return [o for o in group if o.id != order.id and o.is_open]


def _held_legs(store: Store, order: StoredOrder) -> list[StoredOrder]:
    if order.order_class not in ("bracket", "oto") or order.parent_id is not None:
        return []
    return [leg for leg in store.legs_of(order.id) if leg.status == "held"]


def after_fill(store: Store, db: sqlite3.Connection, order: StoredOrder, when: datetime) -> None:
    stamp = fmt_ts(when)
    if order.status == "filled":
        for leg in _held_legs(store, order):
            store.write(
                db, replace(leg, status="new", updated_at=stamp, next_fill_at=when.timestamp())
            )
            store.emit(Update("new", leg.id, stamp))
    for partner in oco_partners(store, order):
        store.finish(db, partner, "canceled", stamp)


def after_end(store: Store, db: sqlite3.Connection, order: StoredOrder, stamp: str) -> None:
    """`order` was just cancelled, expired or rejected."""
    for leg in _held_legs(store, order):
        store.finish(db, leg, "canceled", stamp)
    if order.status == "canceled":
        for partner in oco_partners(store, order):
            store.finish(db, partner, "canceled", stamp)
