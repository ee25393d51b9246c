"""/api/v1/ownership: the map (owner, lock expiry, position, server time), each ticker's
history, release and transfer."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, func, select

from db import ownership as ownership_store
from db import strategies as strategy_store
from db.models import ConflictLog, Position, TickerOwnership
from web.api.common import (
    STRATEGY_NAME_REGEX,
    Cursor,
    Limit,
    decode_cursor,
    page_body,
    respond,
    ticker_param,
)
from web.auth import AdminAccess, ReadAccess
from web.runtime import Rt

router = APIRouter(prefix="/ownership", tags=["ownership"])

Ticker = Annotated[str, Path(min_length=1, max_length=16, description="e.g. AAPL")]


class Release(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "released in the web API"


class Transfer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_strategy: Annotated[str, Field(pattern=STRATEGY_NAME_REGEX, max_length=64)]
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "transferred in the web API"


def ownership_row(row: TickerOwnership, now: datetime, position: Decimal | None = None
                  ) -> dict[str, Any]:  # fmt: skip
    locked = row.released_at is None and row.locked_until is not None and row.locked_until > now
    return {
        "id": row.id,
        "ticker": row.ticker,
        "strategy": row.strategy.name,
        "priority": row.strategy.priority,
        "locked_until": row.locked_until,
        "locked": locked,
        "lock_seconds_left": (row.locked_until - now).total_seconds() if locked and row.locked_until
        else 0,
        "acquired_at": row.acquired_at,
        "acquired_by_order_id": row.acquired_by_order_id,
        "released_at": row.released_at,
        "release_reason": row.release_reason,
        **({"position": position} if position is not None else {}),
    }  # fmt: skip


def _server_now(session: Any) -> datetime:
    """The database's clock: every lock is judged by it, and so are the countdowns."""
    now: datetime = session.scalar(select(func.now()))
    return now.astimezone(UTC)


@router.get("", summary="Live owners with lock expiry and position; `server_time` for countdowns")
def ownership_map(_: ReadAccess, rt: Rt) -> JSONResponse:
    with rt.database.sessions() as session:
        now = _server_now(session)
        rows = session.execute(
            select(TickerOwnership, Position.quantity)
            .outerjoin(Position, and_(Position.strategy_id == TickerOwnership.strategy_id,
                                      Position.ticker == TickerOwnership.ticker))
            .where(TickerOwnership.released_at.is_(None))
            .order_by(TickerOwnership.ticker)
        ).tuples()  # fmt: skip
        items = [ownership_row(row, now, quantity or Decimal(0)) for row, quantity in rows]
    return respond({"server_time": now, "items": items})


@router.get("/{ticker}/history", summary="Every claim on a ticker (acquired, transferred, "
            "released, with reasons) and its conflict decisions, newest first")  # fmt: skip
def ticker_history(
    ticker: Ticker,
    _: ReadAccess,
    rt: Rt,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JSONResponse:
    symbol = ticker_param(ticker)
    after = decode_cursor(cursor)
    query = select(TickerOwnership).where(TickerOwnership.ticker == symbol)
    if after is not None:
        query = query.where(TickerOwnership.id < after)
    with rt.database.sessions() as session:
        now = _server_now(session)
        rows = list(session.scalars(query.order_by(TickerOwnership.id.desc()).limit(limit + 1)))
        items = []
        for row in rows:
            item = ownership_row(row, now)
            item["how"] = _how(row)
            items.append(item)
        conflicts = [
            {"id": c.id, "order_id": c.order_id, "requesting_strategy": c.requesting_strategy.name,
             "owning_strategy": c.owning_strategy.name, "resolution": c.resolution,
             "reasoning": c.reasoning, "created_at": c.created_at}
            for c in session.scalars(select(ConflictLog).where(ConflictLog.ticker == symbol)
                                     .order_by(ConflictLog.id.desc()).limit(20))
        ]  # fmt: skip
    return respond({"server_time": now, "ticker": symbol, **page_body(items, limit),
                    "recent_conflicts": conflicts})  # fmt: skip


def _how(row: TickerOwnership) -> str:
    if row.released_at is None:
        return "owns"
    if (row.release_reason or "").startswith("transferred to "):
        return "transferred"
    return "released"


@router.post("/{ticker}/release", summary="Release the ticker's owner now, lock or no lock")
def release(
    ticker: Ticker,
    who: AdminAccess,
    rt: Rt,
    body: Release | None = None,
) -> JSONResponse:
    symbol = ticker_param(ticker)
    reason = f"{(body or Release()).reason} (by web:{who.name})"
    with rt.database.unit_of_work() as uow:
        ownership_store.lock_ticker(uow.session, symbol or "")
        row = ownership_store.current_owner(uow.session, symbol or "")
        if row is None:
            raise HTTPException(404, f"{symbol} has no owner")
        owner = row.strategy.name
        # TODO(ordercontrol): refuse (or liquidate) when the owner still holds shares, once the
        # position rules of the order control work are on main.
        ownership_store.release(uow.session, row, reason)
        uow.commit()
    return respond({"ticker": symbol, "released_from": owner, "reason": reason})


@router.post("/{ticker}/transfer", summary="Move ownership and the owner's position to another "
             "strategy")  # fmt: skip
def transfer(
    ticker: Ticker,
    body: Transfer,
    who: AdminAccess,
    rt: Rt,
) -> JSONResponse:
    symbol = ticker_param(ticker) or ""
    reason = f"{body.reason} (by web:{who.name})"
    with rt.database.unit_of_work() as uow:
        target = strategy_store.strategy_by_name(uow.session, body.to_strategy)
        if target is None:
            raise HTTPException(404, f"no strategy {body.to_strategy!r}")
        ownership_store.lock_ticker(uow.session, symbol)
        row = ownership_store.current_owner(uow.session, symbol)
        if row is None:
            raise HTTPException(404, f"{symbol} has no owner")
        if row.strategy_id == target.id:
            raise HTTPException(409, f"{symbol} is already owned by {target.name}")
        previous = row.strategy.name
        # The new claim keeps pointing at the order that made the original one (if any).
        order_id = cast(int, row.acquired_by_order_id)
        new_row = ownership_store.transfer(uow.session, row, target, order_id, reason)
        uow.commit()
        now = datetime.now(UTC)
        return respond({"ticker": symbol, "from_strategy": previous,
                        "ownership": ownership_row(new_row, now)})  # fmt: skip
