"""The ASGI app: auth on every /v2 and /admin request, fault injection on /v2, Alpaca-shaped
errors everywhere (a malformed request gets a 4xx with {"code", "message"}, never a crash)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brokersim import admin, marketdata, routes, stream
from brokersim.config import SimConfig
from brokersim.engine import Engine
from brokersim.faults import Fault, Faults, FaultSettings
from brokersim.prices import PriceBook
from brokersim.store import Store
from brokersim.validate import ApiError

_UNAUTHORIZED = {"code": 40110000, "message": "request is not authorized"}


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def build_engine(config: SimConfig) -> Engine:
    faults = Faults(
        FaultSettings(
            latency_ms=config.latency_ms,
            error_rate=config.error_rate,
            garbage_rate=config.garbage_rate,
            accept_then_timeout_rate=config.accept_then_timeout_rate,
            hang_ms=config.hang_ms,
            no_price=[p.strip() for p in config.no_price.split(",") if p.strip()],
        ),
        seed=config.seed,
    )
    store = Store(config.data_dir, Decimal(config.initial_cash))
    return Engine(store, PriceBook(config.seed), config, faults)


class Guard:
    """Auth on /v2 and /admin, then /v2's injected faults. Plain ASGI rather than
    `@app.middleware("http")`, whose per-request task and body streaming cost the simulator
    more CPU than the request itself (it shares the machine with what it serves)."""

    def __init__(self, app: ASGIApp, *, engine: Engine, config: SimConfig) -> None:
        self.app = app
        self.engine = engine
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(("/v2", "/admin")):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get("APCA-API-KEY-ID", "")
        secret = headers.get("APCA-API-SECRET-KEY", "")
        if not (key and secret):
            await JSONResponse(_UNAUTHORIZED, status_code=401)(scope, receive, send)
            return
        if not (
            hmac.compare_digest(key, self.config.api_key)
            and hmac.compare_digest(secret, self.config.api_secret)
        ):
            await JSONResponse(_UNAUTHORIZED, status_code=403)(scope, receive, send)
            return
        if path.startswith("/admin"):
            await self.app(scope, receive, send)
            return
        await self._with_faults(scope, receive, send, path)

    async def _with_faults(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        faults = self.engine.faults
        knobs = faults.settings
        if knobs.latency_ms:
            await asyncio.sleep(knobs.latency_ms / 1000)
        submission = scope["method"] in ("POST", "PATCH") and path.startswith("/v2/orders")
        fault = faults.draw(order_submission=submission)
        if fault is Fault.ERROR:
            unavailable = _error(503, 50300000, "service unavailable (injected fault)")
            await unavailable(scope, receive, send)
            return
        if fault is Fault.GARBAGE:
            garbage = Response("<html><body>502 gateway hiccup", media_type="text/html")
            await garbage(scope, receive, send)
            return
        if fault is not Fault.ACCEPT_THEN_TIMEOUT:
            await self.app(scope, receive, send)
            return
        # The order is stored; the client gives up before it hears so.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        await asyncio.sleep(knobs.hang_ms / 1000)
        for message in held:
            await send(message)


def create_app(config: SimConfig) -> FastAPI:
    engine = build_engine(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.stop()
            engine.store.close()

    app = FastAPI(title="Arbiter brokerage simulator", lifespan=lifespan, openapi_url=None)
    hub = stream.Hub(engine.store, config, engine.faults)
    engine.store.on_updates = hub.publish
    app.state.engine = engine
    app.state.hub = hub
    app.include_router(routes.router)
    app.include_router(marketdata.router)
    app.include_router(admin.router)
    app.include_router(stream.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(Guard, engine=engine, config=config)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: 40410000, 405: 40510000}.get(exc.status_code, exc.status_code * 100000)
        return _error(exc.status_code, code, str(exc.detail).lower())

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, 40010001, "invalid request: " + str(exc.errors()[0].get("msg", "")))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, 50010000, f"internal error: {type(exc).__name__}")

    return app
