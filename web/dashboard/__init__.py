"""The dashboard: server-rendered pages (Jinja2) that update live over the event stream.

`create_app` calls `mount(app)`: the page routes (`router`), the shipped static assets under
/static/dashboard (no asset is ever loaded from the internet), and the redirect to the sign-in
page for a visitor without a session.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from web.dashboard import (
    conflicts,
    events,
    orders,
    overview,
    ownership,
    positions,
    review,
    signin,
    strategies,
)
from web.dashboard.render import HERE, STATIC_PATH, SignInRequired, sign_in_url

router = APIRouter(include_in_schema=False)
for _module in (signin, overview, ownership, conflicts, strategies, orders, positions, review,
                events):  # fmt: skip
    router.include_router(_module.router)


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=str(HERE / "static")), name="dashboard-static")

    @app.exception_handler(SignInRequired)
    async def to_sign_in(_: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(sign_in_url(exc.next_path), 303)


__all__ = ["mount", "router"]
