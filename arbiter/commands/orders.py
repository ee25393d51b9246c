"""`arbiter orders`: list orders, and `orders show` one with its audit trail, fills and events."""

from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from arbiter.commands import common
from core.errors import InvalidInput, OrderNotOpen
from db.models import EventRecord, Fill, Order, OrderTransition
from service_layer.cancellation import cancel_order
from service_layer.replacement import ReplaceChanges, replace_order

ACTOR = "cli"

app = typer.Typer(
    help="Orders: `arbiter orders` lists them, `orders show ID` explains one, `orders cancel ID` "
    "and `orders replace ID` act on one.",
    invoke_without_command=True,
)

COLUMNS = (
    "id", "strategy", "ticker", "side", "quantity", "state", "filled_quantity",
    "avg_fill_price", "needs_manual_review", "reason",
)  # fmt: skip


@app.callback()
def list_orders(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="only orders in this state")] = None,
    strategy: Annotated[str | None, typer.Option(help="only this strategy's orders")] = None,
    ticker: Annotated[str | None, typer.Option(help="only orders in this ticker")] = None,
    review: Annotated[bool, typer.Option("--review", help="only orders needing review")] = False,
    limit: common.Limit = 50,
    as_json: common.AsJson = False,
) -> None:
    """Newest orders first."""
    if ctx.invoked_subcommand is not None:
        return
    query = select(Order).order_by(Order.id.desc()).limit(limit)
    with common.unit_of_work() as uow:
        if state is not None:
            query = query.where(Order.state == common.parse_state(state).value)
        if strategy is not None:
            query = query.where(Order.strategy_name == strategy)
        if ticker is not None:
            query = query.where(Order.ticker == ticker.strip().upper())
        if review:
            query = query.where(Order.needs_manual_review)
        rows = [o.summary() for o in uow.session.scalars(query)]
    common.show_rows(rows, as_json=as_json, columns=COLUMNS, empty="no orders")


def find_order(session: Session, key: str) -> Order:
    """By numeric id or by client_order_id."""
    order = (
        session.get(Order, int(key))
        if key.isdigit()
        else session.scalar(select(Order).where(Order.client_order_id == key))
    )
    if order is None:
        raise InvalidInput(f"no order {key!r}")
    return order


@app.command()
def show(
    key: Annotated[str, typer.Argument(metavar="ID_OR_CLIENT_ORDER_ID")],
    as_json: common.AsJson = False,
) -> None:
    """One order with its audit trail (transitions), fills and events."""
    with common.unit_of_work() as uow:
        order = find_order(uow.session, key)
        transitions = [
            {"from": t.from_state, "to": t.to_state, "reason": t.reason, "cause": t.cause,
             "actor": t.actor, "at": t.created_at}
            for t in uow.session.scalars(
                select(OrderTransition)
                .where(OrderTransition.order_id == order.id)
                .order_by(OrderTransition.id)
            )
        ]  # fmt: skip
        fills = [
            {"fill_key": f.fill_key, "quantity": f.quantity, "price": f.price,
             "filled_at": f.filled_at, "created_at": f.created_at}
            for f in uow.session.scalars(
                select(Fill).where(Fill.order_id == order.id).order_by(Fill.id)
            )
        ]  # fmt: skip
        events = [
            {"seq": e.seq, "id": e.id, "type": e.type, "occurred_at": e.occurred_at,
             "source": e.source, "payload": e.payload, "published_at": e.published_at}
            for e in uow.session.scalars(
                select(EventRecord)
                .where(EventRecord.order_id == order.id)
                .order_by(EventRecord.seq)
            )
        ]  # fmt: skip
        row = order.summary()
    if as_json:
        common.print_json({**row, "transitions": transitions, "fills": fills, "events": events})
        return
    common.show_object(row, as_json=False, title=f"order {order.id}")
    common.show_rows(transitions, as_json=False, title="audit trail", empty="no transitions")
    common.show_rows(fills, as_json=False, title="fills", empty="no fills")
    common.show_rows(
        events, as_json=False, columns=("seq", "type", "occurred_at", "source", "payload"),
        title="events", empty="no events",
    )  # fmt: skip


@app.command()
def cancel(
    key: Annotated[str, typer.Argument(metavar="ID_OR_CLIENT_ORDER_ID")],
    as_json: common.AsJson = False,
) -> None:
    """Cancel one order: at once before submission; at the brokerage, CANCELLED once it
    confirms (fills that raced the cancel are booked). Exit 1 on an order already final."""
    with common.guarded(), common.runtime() as rt:
        try:
            result = cancel_order(rt.database, rt.brokerage, key, requested_by=ACTOR)
        except OrderNotOpen as exc:
            common.fail(str(exc), code=1)
    if as_json:
        common.print_json(asdict(result))
        return
    typer.echo(f"order {result.order_id}: {result.state} ({result.message})")


@app.command()
def replace(
    key: Annotated[str, typer.Argument(metavar="ID_OR_CLIENT_ORDER_ID")],
    quantity: Annotated[str | None, typer.Option(help="the new total quantity")] = None,
    limit_price: Annotated[str | None, typer.Option(help="the new limit price")] = None,
    stop_price: Annotated[str | None, typer.Option(help="the new stop price")] = None,
    as_json: common.AsJson = False,
) -> None:
    """Replace one open order through the brokerage's replace; the replacement is an order
    of its own, linked to this one. A larger quantity passes the risk rules again."""
    with common.guarded(), common.runtime() as rt:
        changes = ReplaceChanges(
            _number("--quantity", quantity),
            _number("--limit-price", limit_price),
            _number("--stop-price", stop_price),
        )
        try:
            result = replace_order(
                rt.database,
                rt.brokerage,
                key,
                changes,
                requested_by=ACTOR,
                limits=rt.risk_limits,
                reference_price=rt.reference_prices.price,
            )
        except OrderNotOpen as exc:
            common.fail(str(exc), code=1)
    if as_json:
        common.print_json(asdict(result))
        return
    typer.echo(
        f"order {result.original_id} replaced by order {result.replacement_id} "
        f"({result.client_order_id}): {result.state}"
    )


def _number(option: str, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value.strip())
    except ArithmeticError:
        raise InvalidInput(f"{option}: not a number: {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise InvalidInput(f"{option}: must be a positive number")
    return number
