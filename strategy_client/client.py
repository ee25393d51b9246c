"""The client API for strategy processes: needs only the Redis URL (and the broker's, when
ARBITER_BROKER_URL points Celery at RabbitMQ).

    from strategy_client.client import submit_signal
    coid = submit_signal("long_term", "AAPL", "buy", 10, signal_id="lt-2026-11-22-aapl")

The shape is checked here (InvalidSignal names the field; nothing is enqueued), the signal is
signed with its strategy's key (core/signing.py; `arbiter strategies key NAME` shows it), then
the chain intake -> validate -> check_conflict -> submit is enqueued. `signal_id` is required:
it is the idempotency key, so sending the same signal again (after a timeout, say) maps to the
same order and creates nothing new.

Keys: `SignalClient(keys=...)` takes one key (a process that is one strategy), a mapping of
strategy name to key, or a callable; without one, the key of strategy NAME is read from the
environment variable ARBITER_STRATEGY_KEY_<NAME> (upper case).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import redis
from celery import Celery

from core.errors import InvalidInput, InvalidSignal
from core.settings import DEFAULT_REDIS_URL, get_settings
from core.signals import (
    SIGNAL_ID_PATTERN,
    STRATEGY_PATTERN,
    Signal,
    client_order_id_for,
    is_name,
)
from core.signing import sign
from strategy_client import pending, routing
from strategy_client.broker import broker_config, is_amqp

KeySource = str | Mapping[str, str] | Callable[[str], str | None] | None
KEY_VARIABLE = "ARBITER_STRATEGY_KEY_{}"


class SignalClient:
    """Sends to the configured broker (`broker_url`, else ARBITER_BROKER_URL, else Redis) and
    notes pending signals in Redis (`redis_url`, else ARBITER_REDIS_URL)."""

    def __init__(
        self, redis_url: str | None = None, broker_url: str | None = None, *,
        keys: KeySource = None,
    ) -> None:
        self.keys = keys
        url = redis_url or _default_redis_url()
        broker = broker_url or get_settings().broker_url or url
        self.app = Celery("arbiter-client")
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        config = broker_config(broker, get_settings().visibility_timeout_s)
        if not is_amqp(broker):
            config["broker_transport_options"] = {"socket_timeout": 5, "socket_connect_timeout": 5}
        self.app.conf.update(
            config,
            task_serializer="json",
            accept_content=["json"],
            task_routes=routing.TASK_ROUTES,
            broker_connection_retry_on_startup=True,
        )

    def submit_signal(
        self,
        strategy: str,
        ticker: str,
        side: str,
        quantity: int | float | str | Decimal,
        *,
        signal_id: str,
        order_type: str = "market",
        limit_price: int | float | str | Decimal | None = None,
        time_in_force: str = "day",
        stop_price: Number | None = None,
        trail_price: Number | None = None,
        trail_percent: Number | None = None,
        order_class: str | None = None,
        take_profit: dict[str, Number] | None = None,
        stop_loss: dict[str, Number] | None = None,
    ) -> str:
        """Check, sign and enqueue one signal; its client_order_id. A failed enqueue raises
        (kombu's OperationalError) and leaves nothing behind: sending again is safe.

        Order types and classes as Alpaca's v2 API defines them: `stop_price` for stop and
        stop_limit, one of `trail_price` / `trail_percent` for trailing_stop; `take_profit`
        ({"limit_price"}) and `stop_loss` ({"stop_price", optional "limit_price"}) legs make a
        bracket (both) or an oto (one) unless `order_class` says otherwise (oco)."""
        raw: dict[str, object] = {
            "strategy": strategy,
            "signal_id": signal_id,
            "ticker": ticker,
            "side": side,
            "quantity": quantity,
            "order_type": order_type,
            "limit_price": limit_price,
            "time_in_force": time_in_force,
        }
        optional = {
            "stop_price": stop_price,
            "trail_price": trail_price,
            "trail_percent": trail_percent,
            "order_class": order_class,
            "take_profit": take_profit,
            "stop_loss": stop_loss,
        }
        raw.update((k, v) for k, v in optional.items() if v is not None)
        signal = Signal.parse(raw)
        message = sign(self.key_for(signal.strategy), signal.to_message(), int(time.time()))
        self.enqueue(message)
        return signal.client_order_id

    def key_for(self, strategy: str) -> str:
        """The signing key of `strategy`, from `keys` or ARBITER_STRATEGY_KEY_<NAME>."""
        source = self.keys
        if isinstance(source, str):
            key: str | None = source
        elif isinstance(source, Mapping):
            key = source.get(strategy)
        elif source is not None:
            key = source(strategy)
        else:
            key = None
        key = key or os.environ.get(KEY_VARIABLE.format(strategy.upper()))
        if not key:
            raise InvalidInput(
                f"no signing key for strategy {strategy!r}: pass keys= or set "
                f"{KEY_VARIABLE.format(strategy.upper())} (`arbiter strategies key {strategy}`)"
            )
        return key

    def cancel(
        self, strategy: str, signal_id: str | None = None, *, client_order_id: str | None = None
    ) -> str:
        """Ask for one of `strategy`'s orders to be cancelled, by its signal_id or its
        client_order_id; returns the client_order_id. The worker cancels at once before
        submission, else asks the brokerage (ORDER_CANCEL_REQUESTED; CANCELLED once it
        confirms). Watch the order's events for the outcome."""
        coid = _order_key(strategy, signal_id, client_order_id)
        self.app.send_task(routing.CANCEL, args=(strategy, coid))
        return coid

    def replace(
        self,
        strategy: str,
        signal_id: str | None = None,
        *,
        client_order_id: str | None = None,
        quantity: Number | None = None,
        limit_price: Number | None = None,
        stop_price: Number | None = None,
    ) -> str:
        """Ask for one of `strategy`'s open orders to be replaced (new quantity, limit or
        stop price) through the brokerage's replace; returns the original's client_order_id.
        The replacement is an order of its own (ORDER_REPLACED names it)."""
        coid = _order_key(strategy, signal_id, client_order_id)
        changes = {"quantity": quantity, "limit_price": limit_price, "stop_price": stop_price}
        if all(v is None for v in changes.values()):
            raise InvalidSignal("quantity", "give a quantity, limit_price or stop_price to replace")
        parsed: dict[str, str | None] = {}
        for name, value in changes.items():
            parsed[name] = None if value is None else str(_positive(name, value))
        self.app.send_task(routing.REPLACE, args=(strategy, coid), kwargs=parsed)
        return coid

    def enqueue(self, message: Any) -> None:
        """Put a raw signal on the pipeline (the worker re-checks everything). A message that
        names its strategy and signal_id gets a safety copy, malformed or not: intake records
        what it can read, and a message lost on its way there is resent like any other."""
        key = pending.key_of(message)
        # The safety copy that the stalled sweep resends if the message is lost (pending.py);
        # taken back when the enqueue fails, so that a caller who retries gets one order.
        if key is not None:
            try:
                pending.remember(self.redis, key, message)
            except (TypeError, ValueError):  # not plain JSON (a Decimal, say): sent uncopied
                key = None
        try:
            routing.send_pipeline(self.app, message)
        except BaseException:
            if key is not None:
                pending.forget(self.redis, key)
            raise

    def close(self) -> None:
        self.app.close()
        self.redis.close()


Number = int | float | str | Decimal


def _order_key(strategy: str, signal_id: str | None, client_order_id: str | None) -> str:
    if not is_name(STRATEGY_PATTERN, strategy):
        raise InvalidSignal("strategy", "must be a strategy name like 'long_term'")
    if (signal_id is None) == (client_order_id is None):
        raise InvalidSignal("signal_id", "give exactly one of signal_id, client_order_id")
    if signal_id is not None:
        if not is_name(SIGNAL_ID_PATTERN, signal_id):
            raise InvalidSignal("signal_id", "must be 1-100 characters of A-Z a-z 0-9 _ . : -")
        return client_order_id_for(strategy, signal_id)
    if not isinstance(client_order_id, str) or not 0 < len(client_order_id) <= 128:
        raise InvalidSignal("client_order_id", "must be a string of 1 to 128 characters")
    return client_order_id


def _positive(name: str, value: Number) -> Decimal:
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise InvalidSignal(name, f"not a number: {value!r}") from None
    if isinstance(value, bool) or not number.is_finite() or number <= 0:
        raise InvalidSignal(name, "must be a positive number")
    return number


def _default_redis_url() -> str:
    return get_settings().redis_url or DEFAULT_REDIS_URL


_default_client: SignalClient | None = None


def submit_signal(
    strategy: str,
    ticker: str,
    side: str,
    quantity: Number,
    *,
    signal_id: str,
    order_type: str = "market",
    limit_price: Number | None = None,
    time_in_force: str = "day",
    stop_price: Number | None = None,
    trail_price: Number | None = None,
    trail_percent: Number | None = None,
    order_class: str | None = None,
    take_profit: dict[str, Number] | None = None,
    stop_loss: dict[str, Number] | None = None,
) -> str:
    """Submit one signal through a process-wide client; see SignalClient.submit_signal."""
    global _default_client
    if _default_client is None:
        _default_client = SignalClient()
    return _default_client.submit_signal(
        strategy,
        ticker,
        side,
        quantity,
        signal_id=signal_id,
        order_type=order_type,
        limit_price=limit_price,
        time_in_force=time_in_force,
        stop_price=stop_price,
        trail_price=trail_price,
        trail_percent=trail_percent,
        order_class=order_class,
        take_profit=take_profit,
        stop_loss=stop_loss,
    )
