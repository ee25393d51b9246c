"""/api/v1/kill-switch: status, on, off (held in Postgres; every switch is an event)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from core.states import OrderState
from db import kill_switch as store
from db.models import Order
from web.api.common import respond
from web.auth import AdminAccess, ReadAccess
from web.runtime import Rt, WebRuntime

router = APIRouter(prefix="/kill-switch", tags=["kill switch"])


class Switch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "operator request (web)"


def _status(rt: WebRuntime) -> JSONResponse:
    live = [OrderState.ORDER_SENT.value, OrderState.PARTIAL_FILLED.value]
    with rt.database.sessions() as session:
        flag = store.kill_switch(session)
        open_orders = session.scalar(
            select(func.count()).select_from(Order).where(Order.state.in_(live))
        )
    return respond({"on": bool(flag.get("on")), "reason": flag.get("reason"),
                    "by": flag.get("by"), "at": flag.get("at"),
                    "live_at_brokerage": int(open_orders or 0)})  # fmt: skip


@router.get("", summary="Whether the kill switch is on, why, by whom, since when")
def status(_: ReadAccess, rt: Rt) -> JSONResponse:
    return _status(rt)


def _set(rt: WebRuntime, on: bool, reason: str, actor: str) -> JSONResponse:
    with rt.database.unit_of_work() as uow:
        store.set_kill_switch(uow.session, on, reason, actor)
        uow.commit()
    return _status(rt)


@router.post("/on", summary="Turn it on: every new signal is rejected")
def switch_on(who: AdminAccess, rt: Rt, body: Switch | None = None) -> JSONResponse:
    return _set(rt, True, (body or Switch()).reason, f"web:{who.name}")


@router.post("/off", summary="Turn it off: signals are accepted again")
def switch_off(who: AdminAccess, rt: Rt, body: Switch | None = None) -> JSONResponse:
    return _set(rt, False, (body or Switch()).reason, f"web:{who.name}")
