"""The OpenAPI document and its Swagger UI, behind a `read` token or the session cookie like
every other route. Swagger UI's files come from the `swagger-ui-bundle-v2` package, so the
page works with no internet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from web.auth import ReadAccess

ASSETS = "/docs/assets"


def _swagger_dir() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def openapi_with_bearer(app: FastAPI) -> dict[str, Any]:
    """The schema, declaring the bearer token every operation needs."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "a token from `arbiter tokens create`"}
        }  # fmt: skip
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def mount_docs(app: FastAPI) -> None:
    app.openapi = lambda: openapi_with_bearer(app)  # type: ignore[method-assign]
    folder = _swagger_dir()

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(_: ReadAccess) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(_: ReadAccess) -> HTMLResponse:
        if folder is None:  # no bundled files: the CDN's (needs internet)
            return get_swagger_ui_html(openapi_url="/openapi.json", title="Arbiter API")
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Arbiter API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str, _: ReadAccess) -> FileResponse:
        if folder is None or "/" in name or name.startswith(".") or not (folder / name).is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(folder / name)
