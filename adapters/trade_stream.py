"""The brokerage's trade_updates websocket through alpaca-py's TradingStream, on a thread of
its own, handing each update's order report to a callback.

`raw_data=True`: the messages stay dicts of decimal strings (alpaca-py's TradeUpdate model
would turn prices into floats), converted by the adapter's `order_report`. alpaca-py
authenticates, listens and reconnects after a drop by itself; the stream has no replay, so
what happens while it is down is caught up by reconciliation.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from alpaca.trading.stream import TradingStream

from adapters.alpaca import order_report
from core.brokerage import BrokerOrder
from core.errors import BrokerageProtocolError

log = logging.getLogger(__name__)

OnReport = Callable[[str, BrokerOrder], None]


class TradeUpdateStream:
    """start() connects in the background; stop() closes the socket and joins the thread."""

    def __init__(self, url: str, api_key: str, secret_key: str, on_report: OnReport) -> None:
        self.url = url
        self.on_report = on_report
        self.received = 0
        self._stream = TradingStream(api_key, secret_key, raw_data=True, url_override=url)
        self._stream.subscribe_trade_updates(self._on_message)
        self._thread = threading.Thread(target=self._stream.run, name="trade-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        loop = self._stream._loop
        if self._thread.is_alive() and loop is not None and loop.is_running():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._stream.stop()
        self._thread.join(timeout=timeout_s)

    async def _on_message(self, message: dict[str, Any]) -> None:
        # Runs on the stream's event loop: one update at a time, in the brokerage's order.
        # Booking blocks the loop for a transaction's few milliseconds, which is the point.
        self.received += 1
        data = message.get("data") if isinstance(message, dict) else None
        event = str(data.get("event", "?")) if isinstance(data, dict) else "?"
        try:
            if not isinstance(data, dict):
                raise BrokerageProtocolError("trade update without data")
            report = order_report(data.get("order"))
        except BrokerageProtocolError as exc:
            log.warning("unreadable trade update (%s) left to reconciliation: %s", event, exc)
            return
        try:
            self.on_report(event, report)
        except Exception:
            # Whatever failed (the database restarting, an anomaly), polling books it later.
            log.exception(
                "booking trade update %s for %s failed: left to reconciliation",
                event,
                report.client_order_id,
            )
