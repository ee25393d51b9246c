"""The trading websocket at /stream, speaking Alpaca's trade_updates protocol as alpaca-py's
TradingStream expects it: JSON messages in binary frames (as Alpaca's paper stream sends them).

    client  {"action": "authenticate", "data": {"key_id": K, "secret_key": S}}
            (or Alpaca's documented short form {"action": "auth", "key": K, "secret": S})
    server  {"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}}
            ("unauthorized", then the socket closes, on bad keys)
    client  {"action": "listen", "data": {"streams": ["trade_updates"]}}
    server  {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    server  {"stream": "trade_updates", "data": {"event": "fill", "order": {...}, ...}} ...

Events go out after the store commits them, in commit order, to every listening connection; a
connection sees only what happens while it listens (no replay, as at Alpaca). The Hub can drop
every connection (admin knob) and refuses new ones while the `stream_down` fault is set."""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from brokersim.config import SimConfig
from brokersim.faults import Faults
from brokersim.records import Update
from brokersim.store import Store
from brokersim.wire import order_json, trade_update_json

router = APIRouter()


def _frame(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


@dataclass(eq=False)
class Connection:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    authorized: bool = False
    listening: bool = False

    def put(self, frame: bytes | None) -> None:
        """Thread-safe: queue a frame (None closes the socket) for this connection's writer."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, frame)


class Hub:
    """Live connections, and the fan-out of committed trade updates to the listening ones."""

    def __init__(self, store: Store, config: SimConfig, faults: Faults) -> None:
        self.store = store
        self.config = config
        self.faults = faults
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()

    def add(self, conn: Connection) -> None:
        with self._lock:
            self._connections.add(conn)

    def remove(self, conn: Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def count(self) -> int:
        with self._lock:
            return len(self._connections)

    def listening(self) -> int:
        """Connections past the listen handshake: the ones that receive trade updates."""
        with self._lock:
            return sum(1 for conn in self._connections if conn.listening)

    def drop_all(self) -> int:
        """Close every connection, as a network cut would; returns how many were open. They
        stop counting at once (a closing connection neither listens nor receives)."""
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            conn.listening = False
            conn.put(None)
        return len(connections)

    def publish(self, updates: list[Update]) -> None:
        """Called by the store after each commit (any thread)."""
        with self._lock:
            listeners = [c for c in self._connections if c.listening]
        if not listeners:
            return
        frames = []
        for update in updates:
            order = self.store.get_order(update.order_id)
            if order is not None:
                frames.append(_frame(trade_update_json(update, order_json(order))))
        for conn in listeners:
            for frame in frames:
                conn.put(frame)

    def handle(self, conn: Connection, raw: str | bytes | None) -> tuple[list[bytes], bool]:
        """Replies to one client message, and whether to close afterwards."""
        try:
            message = json.loads(raw or "")
            action = message.get("action")
            data = message.get("data") or {}
        except (ValueError, AttributeError):
            return [_frame({"action": "error", "data": {"error_message": "invalid message"}})], True
        if action in ("authenticate", "auth"):
            key = data.get("key_id") if action == "authenticate" else message.get("key")
            secret = data.get("secret_key") if action == "authenticate" else message.get("secret")
            conn.authorized = (
                isinstance(key, str)
                and isinstance(secret, str)
                and hmac.compare_digest(key, self.config.api_key)
                and hmac.compare_digest(secret, self.config.api_secret)
            )
            status = "authorized" if conn.authorized else "unauthorized"
            answer = {"status": status, "action": "authenticate"}
            return [_frame({"stream": "authorization", "data": answer})], not conn.authorized
        if action == "listen":
            if not conn.authorized:
                answer = {"status": "unauthorized", "action": "listen"}
                return [_frame({"stream": "authorization", "data": answer})], False
            requested = data.get("streams") if isinstance(data, dict) else None
            streams = [s for s in requested or [] if s == "trade_updates"]
            conn.listening = bool(streams)
            return [_frame({"stream": "listening", "data": {"streams": streams}})], False
        error = {"action": "error", "data": {"error_message": f"unknown action {action!r}"}}
        return [_frame(error)], False


async def _writer(ws: WebSocket, conn: Connection) -> None:
    try:
        while True:
            frame = await conn.queue.get()
            if frame is None:
                await ws.close(code=1001)
                return
            await ws.send_bytes(frame)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client went away first


@router.websocket("/stream")
async def trade_stream(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    if hub.faults.settings.stream_down:
        await ws.close(code=1013)  # before accept: the handshake is refused
        return
    await ws.accept()
    conn = Connection(asyncio.get_running_loop())
    hub.add(conn)
    writer = asyncio.create_task(_writer(ws, conn))
    closing = False
    try:
        while not closing:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            frames, closing = hub.handle(conn, message.get("text") or message.get("bytes"))
            for frame in frames:
                conn.queue.put_nowait(frame)
        if closing:
            conn.queue.put_nowait(None)
            await asyncio.wait_for(writer, timeout=5)
    except (WebSocketDisconnect, RuntimeError, TimeoutError):
        pass
    finally:
        hub.remove(conn)
        if not writer.done():
            writer.cancel()
