"""The client API for strategy processes: needs only the Redis URL.

    from strategy_client.client import submit_signal
    coid = submit_signal("long_term", "AAPL", "buy", 10, signal_id="lt-2026-11-22-aapl")

The shape is checked here (InvalidSignal names the field; nothing is enqueued), then the
chain intake -> validate -> check_conflict -> submit is enqueued. The returned
client_order_id is derived from strategy and signal_id, so sending the same signal again maps
to the same order and creates nothing new.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import redis
from celery import Celery

from core.settings import DEFAULT_REDIS_URL, get_settings
from core.signals import Signal
from strategy_client import pending, routing


class SignalClient:
    def __init__(self, redis_url: str | None = None) -> None:
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
        signal_id: str | None = None,
        order_type: str = "market",
        limit_price: int | float | str | Decimal | None = None,
        time_in_force: str = "day",
    ) -> str:
        signal = Signal.parse(
            {
                "strategy": strategy,
                "signal_id": signal_id if signal_id is not None else uuid.uuid4().hex,
                "ticker": ticker,
                "side": side,
                "quantity": quantity,
                "order_type": order_type,
                "limit_price": limit_price,
                "time_in_force": time_in_force,
            }
        )
        message = signal.to_message()
        # The safety copy that the stalled sweep resends if the message is lost (pending.py).
        pending.remember(self.redis, signal.client_order_id, message)
        self.enqueue(message)
        return signal.client_order_id

    def enqueue(self, message: object) -> None:
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
    signal_id: str | None = None,
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
