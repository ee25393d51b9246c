"""Thin tasks for the strategy client's order control: cancel and replace one order.

A strategy acts only on its own orders. A refusal (an order already final, a risk rule, the
brokerage saying no) is an outcome, logged and returned, not a failure to retry; only a
transient error (Postgres hiccup) is retried, and the services are idempotent.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from celery import Task, shared_task

from core.errors import InvalidInput
from service_layer.cancellation import UnknownOrder
from service_layer.cancellation import cancel_order as cancel_service
from service_layer.replacement import ReplaceChanges
from service_layer.replacement import replace_order as replace_service
from strategy_client import routing
from tasks.pipeline import PipelineTask
from tasks.runtime import runtime

log = logging.getLogger(__name__)


# A cancel can overtake its own signal (they travel on different queues): the order is looked
# for again a few times before the cancel is given up as naming no order.
UNKNOWN_ORDER_RETRIES = 10
UNKNOWN_ORDER_WAIT_S = 1.0


@shared_task(name=routing.CANCEL, bind=True, base=PipelineTask)
def cancel_order(self: Task, strategy: str, client_order_id: str) -> dict[str, Any]:
    rt = runtime()
    try:
        result = cancel_service(
            rt.database, rt.brokerage, client_order_id, requested_by=strategy, strategy=strategy
        )
    except UnknownOrder as exc:
        if self.request.retries < UNKNOWN_ORDER_RETRIES:
            raise self.retry(
                countdown=UNKNOWN_ORDER_WAIT_S, exc=exc, max_retries=UNKNOWN_ORDER_RETRIES
            ) from exc
        log.warning("cancel of %s by %s: %s", client_order_id, strategy, exc)
        return {"client_order_id": client_order_id, "error": str(exc)}
    except InvalidInput as exc:
        log.warning("cancel of %s by %s refused: %s", client_order_id, strategy, exc)
        return {"client_order_id": client_order_id, "error": str(exc)}
    log.info("cancel of %s by %s: %s", client_order_id, strategy, result.message)
    return {"client_order_id": client_order_id, "outcome": result.outcome.value}


@shared_task(name=routing.REPLACE, base=PipelineTask)
def replace_order(
    strategy: str,
    client_order_id: str,
    quantity: str | None = None,
    limit_price: str | None = None,
    stop_price: str | None = None,
) -> dict[str, Any]:
    rt = runtime()
    try:
        changes = ReplaceChanges(
            *(None if v is None else Decimal(str(v)) for v in (quantity, limit_price, stop_price))
        )
        result = replace_service(
            rt.database,
            rt.brokerage,
            client_order_id,
            changes,
            requested_by=strategy,
            limits=rt.risk_limits,
            reference_price=rt.reference_prices.price,
            strategy=strategy,
        )
    except (InvalidInput, ArithmeticError) as exc:
        log.warning("replace of %s by %s refused: %s", client_order_id, strategy, exc)
        return {"client_order_id": client_order_id, "error": str(exc)}
    log.info("replace of %s by %s: %s", client_order_id, strategy, result.message)
    return {"client_order_id": result.client_order_id, "state": result.state}
