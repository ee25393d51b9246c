"""The client API for strategy processes: needs only the Redis URL.

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

from core.errors import InvalidInput
from core.settings import DEFAULT_REDIS_URL, get_settings
from core.signals import Signal
from core.signing import sign
from strategy_client import pending, routing

KeySource = str | Mapping[str, str] | Callable[[str], str | None] | None
KEY_VARIABLE = "ARBITER_STRATEGY_KEY_{}"


class SignalClient:
    def __init__(self, redis_url: str | None = None, *, keys: KeySource = None) -> None:
        self.keys = keys
        url = redis_url or _default_redis_url()
        self.app = Celery("arbiter-client", broker=url)
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            task_routes=routing.TASK_ROUTES,
            broker_connection_retry_on_startup=True,
            broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5},
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
    ) -> str:
        """Check, sign and enqueue one signal; its client_order_id. A failed enqueue raises
        (kombu's OperationalError) and leaves nothing behind: sending again is safe."""
        signal = Signal.parse(
            {
                "strategy": strategy,
                "signal_id": signal_id,
                "ticker": ticker,
                "side": side,
                "quantity": quantity,
                "order_type": order_type,
                "limit_price": limit_price,
                "time_in_force": time_in_force,
            }
        )
        message = sign(self.key_for(signal.strategy), signal.to_message(), int(time.time()))
        # The safety copy that the stalled sweep resends if the message is lost (pending.py);
        # taken back when the enqueue fails, so that a caller who retries gets one order.
        pending.remember(self.redis, signal.client_order_id, message)
        try:
            self.enqueue(message)
        except BaseException:
            pending.forget(self.redis, signal.client_order_id)
            raise
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

    def enqueue(self, message: Any) -> None:
        """Put a raw signal on the pipeline (the worker re-checks everything)."""
        routing.send_pipeline(self.app, message)

    def close(self) -> None:
        self.app.close()
        self.redis.close()


def _default_redis_url() -> str:
    return get_settings().redis_url or DEFAULT_REDIS_URL


_default_client: SignalClient | None = None


def submit_signal(
    strategy: str,
    ticker: str,
    side: str,
    quantity: int | float | str | Decimal,
    *,
    signal_id: str,
    order_type: str = "market",
    limit_price: int | float | str | Decimal | None = None,
    time_in_force: str = "day",
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
    )
