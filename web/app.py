"""The FastAPI application: `create_app(runtime)` is the web's composition root.

Routes: `/healthz` (no auth), `/login` and `/logout`, the JSON API under `/api/v1` (OpenAPI
at `/docs`), `/metrics` (Prometheus, `read` token), and the dashboard pages when the
`web.dashboard` package is present. Every bad input answers a clear 4xx, never a 5xx.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import web.api
from core.errors import ArbiterError, InvalidInput, InvalidTransition
from core.settings import Settings, get_settings
from web import auth
from web.docs import mount_docs
from web.runtime import WebRuntime, runtime_of

log = logging.getLogger(__name__)
VERSION = "1"


def create_app(runtime: WebRuntime | None = None, *, settings: Settings | None = None) -> FastAPI:
    rt = runtime or WebRuntime(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.start()
        try:
            yield
        finally:
            stream = getattr(app.state, "event_stream", None)
            if stream is not None:
                await stream.close()
            rt.close()

    app = FastAPI(
        title="Arbiter",
        version=VERSION,
        summary="Conflict-free order routing: strategies, ownership, conflicts, orders, events.",
        lifespan=lifespan,
        docs_url=None,  # served behind auth by web.docs
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = rt
    _add_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    if rt.settings.web_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=rt.settings.web_cors_origins,
            allow_methods=["GET", "POST", "PATCH"],
            allow_headers=["Authorization", "Content-Type", auth.CSRF_HEADER, "Last-Event-ID"],
        )
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"],
                      summary="Postgres and Redis status; no auth")  # fmt: skip
    app.include_router(auth.router)
    app.include_router(web.api.router)
    for optional in ("web.metrics", "web.sse"):
        try:
            module: Any = importlib.import_module(optional)
        except ImportError:
            continue
        app.include_router(module.router)
    mount_docs(app)
    _mount_dashboard(app)
    return app


_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# JSON and metrics never need to run or load anything.
_DATA_CSP = "default-src 'none'; frame-ancestors 'none'"


class SecurityHeaders:
    """Pure ASGI (no buffering, so the event stream flows): headers on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        data = str(scope.get("path", "")).startswith(("/api/", "/metrics", "/healthz"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers.setdefault(name, value)
                if data:
                    headers.setdefault("Content-Security-Policy", _DATA_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _mount_dashboard(app: FastAPI) -> None:
    """The dashboard lives in web/dashboard (its own package): when present, its
    `mount(app)` adds the page routes and static files (pages authenticate with
    `web.auth.require(...)`, which accepts the session cookie, and put `web.auth.csrf_token`
    in their forms)."""
    try:
        dashboard: Any = importlib.import_module("web.dashboard")
    except ImportError:
        return
    mount = getattr(dashboard, "mount", None)
    if callable(mount):
        mount(app)


def _check_health(rt: WebRuntime) -> dict[str, str]:
    status: dict[str, str] = {}
    try:
        with rt.database.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        status["postgres"] = "ok"
    except SQLAlchemyError as exc:
        status["postgres"] = f"down: {type(exc.__cause__ or exc).__name__}"
    try:
        rt.redis.ping()
        status["redis"] = "ok"
    except redis.RedisError as exc:
        status["redis"] = f"down: {type(exc).__name__}"
    return status


async def healthz(request: Request) -> JSONResponse:
    status = await run_in_threadpool(_check_health, runtime_of(request))
    healthy = all(value == "ok" for value in status.values())
    return JSONResponse({"status": "ok" if healthy else "degraded", **status},
                        status_code=200 if healthy else 503)  # fmt: skip


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidInput)
    async def invalid_input(_: Request, exc: InvalidInput) -> JSONResponse:
        field = getattr(exc, "field", None)
        body: dict[str, Any] = {"detail": str(exc)}
        if field is not None:
            body["field"] = field
        return JSONResponse(body, status_code=422)

    @app.exception_handler(InvalidTransition)
    async def invalid_transition(_: Request, exc: InvalidTransition) -> JSONResponse:
        return JSONResponse({"detail": f"not allowed in this state: {exc}"}, status_code=409)

    @app.exception_handler(ArbiterError)
    async def arbiter_error(_: Request, exc: ArbiterError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(DataError)
    async def data_error(_: Request, exc: DataError) -> JSONResponse:
        # A value Postgres cannot store (a NUL byte, an out-of-range number): the caller's.
        return JSONResponse({"detail": "a value is out of range or not storable"},
                            status_code=422)  # fmt: skip

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig or exc)
        return JSONResponse({"detail": "the database is unavailable; try again"},
                            status_code=503, headers={"Retry-After": "5"})  # fmt: skip
