"""An operator's ownership moves that keep the books (SPEC §2): no command leaves a position
without an owner.

- transfer: ownership and the owner's position (quantity and average cost) move together,
  audited as a conflict-log-free OWNERSHIP_TRANSFERRED with the operator's reason.
- release: only when the owner's position is flat; otherwise refused, naming the position.
  With liquidation, the owner's lock ends now, and a market sell of the position goes through
  the pipeline as the owner; settlement releases the ownership when the position is flat.

Each runs under the ticker's lock, in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.signals import TICKER_PATTERN, is_name
from db.models import TickerOwnership
from db.ownership import current_owner, held_quantity, lock_ticker, release, transfer, unlock
from db.risk_counts import live_order_count
from db.strategies import require_strategy


@dataclass(frozen=True)
class OwnershipMove:
    ticker: str
    from_strategy: str
    to_strategy: str | None
    quantity: Decimal
    message: str


class PositionHeld(InvalidInput):
    """A release asked of an owner that still holds shares."""


def _plain(quantity: Decimal) -> str:
    return format(quantity.normalize(), "f")


def _owned(session: Session, ticker: str) -> tuple[str, TickerOwnership]:
    symbol = ticker.strip().upper()
    if not is_name(TICKER_PATTERN, symbol):
        raise InvalidInput(f"{ticker!r} is not a ticker")
    lock_ticker(session, symbol)
    row = current_owner(session, symbol)
    if row is None:
        raise InvalidInput(f"{symbol} has no owner")
    return symbol, row


def transfer_ownership(session: Session, ticker: str, to: str, reason: str) -> OwnershipMove:
    """Move `ticker`'s ownership and position to strategy `to`. Refused while the owner has
    orders live in the ticker (their fills would land on a strategy that no longer owns it)."""
    symbol, row = _owned(session, ticker)
    target = require_strategy(session, to)
    owner = row.strategy
    if owner.id == target.id:
        raise InvalidInput(f"{target.name} already owns {symbol}")
    if not target.active:
        raise InvalidInput(f"{target.name} is inactive: activate it before giving it {symbol}")
    live = live_order_count(session, owner.id, symbol)
    if live:
        raise InvalidInput(
            f"{owner.name} has {live} order(s) live in {symbol}: cancel them or let them end first"
        )
    quantity = held_quantity(session, owner.id, symbol)
    transfer(session, row, target, None, reason=f"operator transfer: {reason}")
    return OwnershipMove(
        symbol,
        owner.name,
        target.name,
        quantity,
        f"{symbol} moved from {owner.name} to {target.name} with a position of {_plain(quantity)}",
    )


def release_ownership(session: Session, ticker: str, reason: str) -> OwnershipMove:
    """Release `ticker`'s owner, which must hold no shares of it (PositionHeld otherwise)."""
    symbol, row = _owned(session, ticker)
    owner = row.strategy
    quantity = held_quantity(session, owner.id, symbol)
    if quantity:
        raise PositionHeld(
            f"{owner.name} holds {_plain(quantity)} {symbol}: a release would leave that position "
            "without an owner; sell it first, transfer it, or release with --liquidate"
        )
    release(session, row, reason)
    return OwnershipMove(symbol, owner.name, None, quantity, f"released {symbol} from {owner.name}")


def begin_liquidation(session: Session, ticker: str, reason: str) -> OwnershipMove:
    """End the owner's lock now and say what must be sold; the caller sends the sell signal
    (as the owner) after commit. A flat owner is simply released."""
    symbol, row = _owned(session, ticker)
    owner = row.strategy
    quantity = held_quantity(session, owner.id, symbol)
    if not quantity:
        release(session, row, reason)
        return OwnershipMove(symbol, owner.name, None, quantity, f"released {symbol} (flat)")
    if not owner.active:
        raise InvalidInput(
            f"{owner.name} is inactive, so it cannot sell its {_plain(quantity)} {symbol}: "
            "transfer the ticker to an active strategy, or activate it first"
        )
    unlock(session, row, f"liquidation: {reason}")
    return OwnershipMove(
        symbol,
        owner.name,
        None,
        quantity,
        f"selling {_plain(quantity)} {symbol} as {owner.name}; the ownership ends when it is flat",
    )
