"""/api/v1/strategies: list, create, change (priority, lock days, limits), (de)activate.
Every change is an event in the durable history, naming the token that made it."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from core.strategies import Horizon
from db import strategies as store
from db.models import Strategy, TickerOwnership
from web.api.common import STRATEGY_NAME_REGEX, respond
from web.auth import AdminAccess, Principal, ReadAccess
from web.runtime import Rt, WebRuntime

router = APIRouter(prefix="/strategies", tags=["strategies"])

StrategyName = Annotated[str, Path(min_length=1, max_length=64, pattern=STRATEGY_NAME_REGEX)]
PositiveNumber = Annotated[
    Decimal, Field(gt=0, lt=Decimal("1e12"), max_digits=24, decimal_places=9)
]


class Limits(BaseModel):
    """Per-strategy overrides of the default risk limits (null removes an override)."""

    model_config = ConfigDict(extra="forbid")
    max_order_quantity: PositiveNumber | None = None
    max_order_notional: PositiveNumber | None = None
    max_open_orders: Annotated[int, Field(gt=0, le=1_000_000)] | None = None
    max_signals_per_minute: Annotated[int, Field(gt=0, le=1_000_000)] | None = None


class NewStrategy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=STRATEGY_NAME_REGEX, max_length=64)]
    priority: Annotated[int, Field(ge=0, le=1_000_000)]
    horizon: Horizon
    display_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    lock_days: Annotated[float, Field(ge=0, le=36_500)] = 0
    limits: Limits | None = None


class StrategyChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    priority: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    lock_days: Annotated[float, Field(ge=0, le=36_500)] | None = None
    limits: Limits | None = None
    display_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    reason: Annotated[str, Field(max_length=500)] = "changed in the web API"


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(max_length=500)] | None = None


def strategy_row(strategy: Strategy, owned: int = 0) -> dict[str, Any]:
    config = strategy.config or {}
    return {
        "id": strategy.id,
        "name": strategy.name,
        "display_name": strategy.display_name,
        "priority": strategy.priority,
        "horizon": strategy.horizon,
        "active": strategy.active,
        "lock_days": config.get("ownership_lock_days", 0),
        # Limits as decimal strings, however they are stored (exact, and one type per field).
        "limits": {k: str(v) for k, v in (config.get("limits") or {}).items()},
        "owned_tickers": owned,
        "created_at": strategy.created_at,
        "updated_at": strategy.updated_at,
    }


def _limits(limits: Limits | None) -> dict[str, Any] | None:
    if limits is None:
        return None
    return {k: (str(v) if isinstance(v, Decimal) else v)
            for k, v in limits.model_dump(exclude_unset=True).items()}  # fmt: skip


def _owned_counts(rt: WebRuntime) -> dict[int, int]:
    with rt.database.sessions() as session:
        rows = session.execute(
            select(TickerOwnership.strategy_id, func.count())
            .where(TickerOwnership.released_at.is_(None))
            .group_by(TickerOwnership.strategy_id)
        ).tuples()
        return {int(k): int(v) for k, v in rows}


@router.get("", summary="Strategies by priority (highest wins a conflict)")
def list_strategies(_: ReadAccess, rt: Rt) -> JSONResponse:
    owned = _owned_counts(rt)
    with rt.database.sessions() as session:
        rows = [strategy_row(s, owned.get(s.id, 0)) for s in store.list_strategies(session)]
    return respond({"items": rows})


@router.get("/{name}", summary="One strategy")
def get_strategy(
    name: StrategyName,
    _: ReadAccess,
    rt: Rt,
) -> JSONResponse:
    with rt.database.sessions() as session:
        strategy = store.strategy_by_name(session, name)
        if strategy is None:
            raise HTTPException(404, f"no strategy {name!r}")
        return respond(strategy_row(strategy, _owned_counts(rt).get(strategy.id, 0)))


@router.post("", status_code=201, summary="Add a strategy (active at once)")
def create_strategy(
    body: NewStrategy,
    who: AdminAccess,
    rt: Rt,
) -> JSONResponse:
    days = float(body.lock_days)
    config: dict[str, Any] = {"ownership_lock_days": int(days) if days.is_integer() else days}
    limits = _limits(body.limits)
    if limits:
        config["limits"] = {k: v for k, v in limits.items() if v is not None}
    with rt.database.unit_of_work() as uow:
        if store.strategy_by_name(uow.session, body.name) is not None:
            raise HTTPException(409, f"strategy {body.name!r} already exists")
        strategy = store.add_strategy(uow.session, body.name, body.priority, body.horizon.value,
                                      display_name=body.display_name, config=config)  # fmt: skip
        store.announce_created(uow.session, strategy, actor=f"web:{who.name}")
        uow.commit()
        return respond(strategy_row(strategy), 201)


@router.patch("/{name}", summary="Change priority, lock days, limits or display name")
def change_strategy(
    name: StrategyName,
    body: StrategyChange,
    who: AdminAccess,
    rt: Rt,
) -> JSONResponse:
    with rt.database.unit_of_work() as uow:
        _exists(uow.session, name)
        strategy = store.update_strategy(
            uow.session, name, actor=f"web:{who.name}", reason=body.reason,
            priority=body.priority, lock_days=body.lock_days, limits=_limits(body.limits),
            display_name=body.display_name,
        )  # fmt: skip
        uow.commit()
        return respond(strategy_row(strategy))


def _set_active(rt: WebRuntime, name: str, active: bool, reason: str | None, who: Principal
                ) -> JSONResponse:  # fmt: skip
    verb = "activated" if active else "deactivated"
    text = f"{reason or verb + ' in the web API'} (by web:{who.name})"
    with rt.database.unit_of_work() as uow:
        _exists(uow.session, name)
        strategy = store.set_active(uow.session, name, active, text)
        uow.commit()
        return respond(strategy_row(strategy))


@router.post("/{name}/activate", summary="Accept the strategy's signals again")
def activate(
    name: StrategyName,
    who: AdminAccess,
    rt: Rt,
    body: Annotated[Reason | None, Body()] = None,
) -> JSONResponse:
    return _set_active(rt, name, True, body.reason if body else None, who)


@router.post("/{name}/deactivate", summary="Reject its new signals; release its locks")
def deactivate(
    name: StrategyName,
    who: AdminAccess,
    rt: Rt,
    body: Annotated[Reason | None, Body()] = None,
) -> JSONResponse:
    return _set_active(rt, name, False, body.reason if body else None, who)


def _exists(session: Any, name: str) -> None:
    if store.strategy_by_name(session, name) is None:
        raise HTTPException(404, f"no strategy {name!r}")
