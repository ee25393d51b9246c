"""`arbiter web`: the JSON API, event stream, metrics and dashboard (FastAPI on uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from arbiter.commands import common

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def web(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default 8000)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the API under /api/v1 (docs at /docs), /metrics, /healthz and the dashboard.
    Every route but /healthz needs a token: create one with `arbiter tokens create`."""
    import uvicorn

    from web.app import create_app
    from web.runtime import WebRuntime

    current = common.settings()
    if not current.database_url:
        common.fail(common.NO_DATABASE)
    bind = host or current.web_host
    bind_port = port or current.web_port
    if bind not in LOOPBACK and not bind.startswith("127."):
        common.err_console.print(
            f"[yellow]warning:[/yellow] serving on {bind}, reachable from other machines; "
            "put HTTPS in front (and set ARBITER_WEB_SECURE_COOKIES=true)",
            highlight=False,
        )
    app = create_app(WebRuntime(current))
    typer.echo(f"Arbiter web on http://{bind}:{bind_port}  (API docs: /docs)")
    uvicorn.run(app, host=bind, port=bind_port, log_level=log_level.lower(),
                proxy_headers=False, server_header=False,
                timeout_graceful_shutdown=3)  # fmt: skip
