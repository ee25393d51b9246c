"""Ticker ownership and conflict resolution: pure rules that return a decision with reasoning.

For a signal from strategy S on ticker T:
1. S unknown or inactive: blocked.
2. T has no owner: allowed; a buy claims T for S.
3. T owned by S: allowed.
4. T owned by O != S: a conflict. Override when S's priority is higher and O's ownership is
   not locked; otherwise blocked. An inactive O (deactivated, still owning a position) ranks
   below every active strategy and holds no lock. Every case-4 decision is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from core.brokerage import Side


class Resolution(StrEnum):
    ALLOWED = "allowed"
    BLOCKED = "blocked"
    PRIORITY_OVERRIDE = "priority_override"


@dataclass(frozen=True)
class StrategyView:
    name: str
    priority: int
    active: bool = True


@dataclass(frozen=True)
class Ownership:
    ticker: str
    owner: StrategyView
    locked_until: datetime | None = None
    owner_orders_in_flight: int = 0  # the owner's live orders in this ticker

    def locked_at(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True)
class ConflictDecision:
    resolution: Resolution
    reasoning: str
    claim: bool = False  # S takes T (case 2 buy, or override)
    conflict: bool = False  # case 4: log it and publish CONFLICT_DETECTED
    previous_owner: StrategyView | None = None

    @property
    def allowed(self) -> bool:
        return self.resolution is not Resolution.BLOCKED


def decide(
    requester: StrategyView | None,
    requester_name: str,
    ticker: str,
    side: Side,
    ownership: Ownership | None,
    now: datetime,
) -> ConflictDecision:
    if requester is None:
        return ConflictDecision(Resolution.BLOCKED, f"strategy {requester_name!r} is unknown")
    if not requester.active:
        return ConflictDecision(Resolution.BLOCKED, f"strategy {requester.name!r} is inactive")

    action = f"{side.value} {ticker}"
    if ownership is None:
        if side is Side.BUY:
            return ConflictDecision(
                Resolution.ALLOWED,
                f"{ticker} has no owner: {requester.name} may {action} and claims {ticker}",
                claim=True,
            )
        return ConflictDecision(
            Resolution.ALLOWED, f"{ticker} has no owner: {requester.name} may {action}"
        )

    owner = ownership.owner
    if owner.name == requester.name:
        return ConflictDecision(
            Resolution.ALLOWED,
            f"{requester.name} owns {ticker}: the owner adjusting its own position ({action})",
        )

    ranks = (
        f"{requester.name} (priority {requester.priority}) vs owner {owner.name} "
        f"(priority {owner.priority})"
    )
    if not owner.active:
        return _inactive_owner(requester, action, ticker, ownership)
    if requester.priority <= owner.priority:
        return ConflictDecision(
            Resolution.BLOCKED,
            f"BLOCKED {requester.name} {action}: insufficient priority, {ranks}",
            conflict=True,
            previous_owner=owner,
        )
    if ownership.locked_at(now):
        assert ownership.locked_until is not None
        return ConflictDecision(
            Resolution.BLOCKED,
            f"BLOCKED {requester.name} {action}: {owner.name}'s ownership of {ticker} is locked "
            f"until {ownership.locked_until:%Y-%m-%d %H:%M} UTC, {ranks}",
            conflict=True,
            previous_owner=owner,
        )
    if ownership.owner_orders_in_flight:
        # Moving the position while the owner's orders are live would let their fills land
        # on a strategy that no longer owns the ticker.
        return ConflictDecision(
            Resolution.BLOCKED,
            f"BLOCKED {requester.name} {action}: higher priority, but {owner.name} has "
            f"{ownership.owner_orders_in_flight} order(s) in flight on {ticker}, {ranks}",
            conflict=True,
            previous_owner=owner,
        )
    return ConflictDecision(
        Resolution.PRIORITY_OVERRIDE,
        f"PRIORITY_OVERRIDE {requester.name} {action}: higher priority and {owner.name}'s "
        f"ownership is not locked, {ranks}; ownership of {ticker} moves to {requester.name}",
        claim=True,
        conflict=True,
        previous_owner=owner,
    )


def _inactive_owner(
    requester: StrategyView, action: str, ticker: str, ownership: Ownership
) -> ConflictDecision:
    owner = ownership.owner
    why = f"owner {owner.name} is inactive and ranks below every active strategy"
    if ownership.owner_orders_in_flight:
        return ConflictDecision(
            Resolution.BLOCKED,
            f"BLOCKED {requester.name} {action}: {why}, but it has "
            f"{ownership.owner_orders_in_flight} order(s) in flight on {ticker}",
            conflict=True,
            previous_owner=owner,
        )
    return ConflictDecision(
        Resolution.PRIORITY_OVERRIDE,
        f"PRIORITY_OVERRIDE {requester.name} {action}: {why}; ownership of {ticker} moves to "
        f"{requester.name} together with {owner.name}'s position",
        claim=True,
        conflict=True,
        previous_owner=owner,
    )
