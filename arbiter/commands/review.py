"""`arbiter review`: what Arbiter could not settle on its own, and a human's decision."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

import typer
from sqlalchemy import select

from arbiter.commands import common
from core.errors import InvalidInput
from core.jsonable import plain_decimal
from db.models import Order, ReviewItem
from db.order_manager import OrderManager
from service_layer import review_actions

app = typer.Typer(help="Items waiting for a human decision.", no_args_is_help=True)

ACTOR = "cli"
COLUMNS = ("id", "kind", "order_id", "client_order_id", "ticker", "state", "reason", "created_at")


@app.command("list")
def list_(as_json: common.AsJson = False) -> None:
    """Open review items, oldest first, with their order's current state."""
    query = (
        select(ReviewItem, Order)
        .outerjoin(Order, Order.id == ReviewItem.order_id)
        .where(ReviewItem.resolved_at.is_(None))
        .order_by(ReviewItem.id)
    )
    with common.unit_of_work() as uow:
        rows = [
            {
                "id": item.id,
                "kind": item.kind,
                "order_id": item.order_id,
                "client_order_id": order.client_order_id if order else None,
                "ticker": item.ticker,
                "state": order.state if order else None,
                "reason": item.reason,
                "details": item.details,
                "created_at": item.created_at,
            }
            for item, order in uow.session.execute(query).tuples()
        ]
    common.show_rows(rows, as_json=as_json, columns=COLUMNS, empty="nothing to review")


@app.command()
def resolve(
    item_id: Annotated[int, typer.Argument(metavar="ID", help="review item id")],
    note: Annotated[str, typer.Option(help="the decision, recorded with the item")],
    state: Annotated[
        str | None, typer.Option(help="move the order to this state (audited)")
    ] = None,
    correct: Annotated[
        str | None,
        typer.Option(
            help="correct a final order to the brokerage's final word, e.g. a fill found "
            "after CANCELLED: --correct FULLY_FILLED (audited, ORDER_CORRECTED)"
        ),
    ] = None,
    adopt_brokerage: Annotated[
        bool,
        typer.Option(
            "--adopt-brokerage",
            help="position mismatch: book the difference so that Arbiter holds the "
            "brokerage's quantity (audited, POSITION_ADJUSTED)",
        ),
    ] = False,
    strategy: Annotated[
        str | None,
        typer.Option(help="with --adopt-brokerage: the strategy to book to (default: owner)"),
    ] = None,
) -> None:
    """Close a review item; for an order item, optionally move the order to --state or
    --correct a final one; for a position mismatch, optionally --adopt-brokerage."""
    with common.unit_of_work() as uow:
        if not note.strip():
            raise InvalidInput("--note must not be empty")
        target = common.parse_state(state) if state is not None else None
        item = uow.session.get(ReviewItem, item_id)
        if item is None:
            raise InvalidInput(f"no review item {item_id}")
        if item.resolved_at is not None:
            raise InvalidInput(f"review item {item_id} was already resolved at {item.resolved_at}")
        if correct is not None:
            order = review_actions.correct_order(
                uow.session, item, common.parse_state(correct), note, ACTOR
            )
            outcome = f"order {order.id} corrected to {order.state}"
        elif adopt_brokerage:
            quantity, avg = _brokerage_position(item.ticker or "")
            adjusted = review_actions.adopt_brokerage_position(
                uow.session,
                item,
                brokerage_quantity=quantity,
                brokerage_avg_price=avg,
                strategy=strategy,
                note=note,
                actor=ACTOR,
            )
            outcome = (
                f"{adjusted.strategy} now holds {plain_decimal(adjusted.after)} "
                f"{adjusted.ticker} (was {plain_decimal(adjusted.before)})"
            )
        elif item.order_id is not None:
            order = OrderManager(uow.session).resolve_review(
                item.order_id, note=note, actor=ACTOR, target=target
            )
            outcome = f"order {order.id} is {order.state}"
        elif target is not None:
            raise InvalidInput(f"review item {item_id} has no order: --state does not apply")
        else:
            item.resolved_at = datetime.now(UTC)
            item.resolution_note = note
            outcome = f"{item.kind} item"
        uow.commit()
    typer.echo(f"resolved review item {item_id} ({outcome})")


def _brokerage_position(ticker: str) -> tuple[Decimal, Decimal | None]:
    """The brokerage's quantity and average entry price in `ticker`, asked now."""
    from adapters.alpaca import AlpacaBrokerage

    brokerage = AlpacaBrokerage.from_settings(common.settings())
    for position in brokerage.list_positions():
        if position.symbol == ticker:
            return position.quantity, position.avg_entry_price
    return Decimal(0), None
