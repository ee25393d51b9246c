"""Structured logs for the worker and beat.

Every log line carries the order it concerns (order id, client_order_id, strategy, ticker) when
known: `bind_order(...)` puts them in context variables, a logging Filter copies them onto each
record. Plain text by default; JSON lines when ARBITER_LOG_JSON=true. Known secrets (brokerage
key and secret, Flower password) are masked in every line.

Connected to Celery's `setup_logging` signal on import, so importing this module from a task
module (the pipeline does) is enough for `celery -A tasks worker|beat`. Each task starts with an
empty context (`task_prerun`), bound to its order id when it is a pipeline task.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from celery import signals

from core.settings import get_settings
from strategy_client.routing import PIPELINE

ORDER_FIELDS = ("order_id", "client_order_id", "strategy", "ticker")
_context: ContextVar[dict[str, Any] | None] = ContextVar("arbiter_log_context", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s%(order_context)s: %(message)s"


def bind_order(
    *,
    order_id: int | None = None,
    client_order_id: str | None = None,
    strategy: str | None = None,
    ticker: str | None = None,
) -> None:
    """Attach these order fields to every log line of the current task (None leaves a field)."""
    given = {"order_id": order_id, "client_order_id": client_order_id, "strategy": strategy,
             "ticker": ticker}  # fmt: skip
    current = dict(_context.get() or {})
    current.update({k: v for k, v in given.items() if v is not None})
    _context.set(current)


def bind_order_of(order: Any) -> None:
    """`bind_order` from an Order row (anything with id, client_order_id, strategy_name, ticker)."""
    bind_order(
        order_id=order.id,
        client_order_id=order.client_order_id,
        strategy=order.strategy_name,
        ticker=order.ticker,
    )


def clear_order() -> None:
    _context.set(None)


def order_context() -> dict[str, Any]:
    return dict(_context.get() or {})


class OrderContextFilter(logging.Filter):
    """Copies the bound order fields onto each record (as attributes and as `order_context`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = order_context()
        for name in ORDER_FIELDS:
            setattr(record, name, bound.get(name))
        record.order_context = "".join(
            f" {name}={bound[name]}" for name in ORDER_FIELDS if bound.get(name) is not None
        )
        return True


class _Redacting(logging.Formatter):
    def __init__(self, secrets: list[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class TextFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(_Redacting):
    """One JSON object per line: time, level, logger, process, message, order fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        for name in ORDER_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(line, default=str))


def secrets_to_mask() -> list[str]:
    settings = get_settings()
    values = [settings.brokerage_key, settings.brokerage_secret, settings.flower_password or ""]
    basic_auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    values += [pair.partition(":")[2] for pair in basic_auth.split(",") if pair]
    return values


def make_handler(as_json: bool | None = None) -> logging.Handler:
    settings = get_settings()
    as_json = settings.log_json if as_json is None else as_json
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(secrets_to_mask()) if as_json
        else TextFormatter(secrets_to_mask(), TEXT_FORMAT)
    )  # fmt: skip
    handler.setFormatter(formatter)
    handler.addFilter(OrderContextFilter())
    return handler


def configure(loglevel: int | str | None = None, as_json: bool | None = None) -> None:
    """Replace the root logger's handlers with one structured handler on stderr."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(as_json))
    root.setLevel(loglevel or get_settings().log_level)


@signals.setup_logging.connect
def _on_setup_logging(loglevel: int | None = None, **_: Any) -> None:
    configure(loglevel)


@signals.task_prerun.connect
def _on_task_prerun(
    sender: Any = None, args: tuple[Any, ...] | None = None, **_: Any
) -> None:
    clear_order()
    # Only the pipeline's tasks take an order id first (a notification takes a delivery id).
    if getattr(sender, "name", None) not in PIPELINE:
        return
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        bind_order(order_id=args[0])


@signals.task_postrun.connect
def _on_task_postrun(**_: Any) -> None:
    clear_order()
