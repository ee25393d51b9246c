"""`arbiter brokersim ...`: serve the simulator, or inspect and steer a running one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from brokersim.config import SimConfig

app = typer.Typer(help="The bundled Alpaca-compatible brokerage simulator.", no_args_is_help=True)

Url = Annotated[str | None, typer.Option(help="simulator URL (default ARBITER_BROKERAGE_URL)")]
AsJson = Annotated[bool, typer.Option("--json", help="print raw JSON")]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    data: Annotated[Path | None, typer.Option(help="data directory (SQLite lives here)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for prices and rejects")] = None,
    fill_latency_ms: Annotated[int | None, typer.Option(help="0 fills inside the POST")] = None,
    partial_slices: Annotated[int | None, typer.Option(help="fills per order")] = None,
    reject_rate: Annotated[float | None, typer.Option(help="share of orders rejected")] = None,
    day_length_s: Annotated[float | None, typer.Option(help="day orders expire after")] = None,
    tick_ms: Annotated[int | None, typer.Option(help="engine loop period")] = None,
    latency_ms: Annotated[int | None, typer.Option(help="added to every /v2 request")] = None,
    error_rate: Annotated[float | None, typer.Option(help="share of 503 answers")] = None,
    accept_then_timeout_rate: Annotated[float | None, typer.Option()] = None,
    garbage_rate: Annotated[float | None, typer.Option(help="share of non-JSON answers")] = None,
    hang_ms: Annotated[int | None, typer.Option(help="stall for accept-then-timeout")] = None,
    no_price: Annotated[
        str | None, typer.Option(help="symbol patterns without market data, e.g. 'NOPX*,ZZZ'")
    ] = None,
) -> None:
    """Run the simulator in the foreground (also: python -m brokersim)."""
    from brokersim.server import serve as run

    given: dict[str, Any] = {
        "host": host,
        "port": port,
        "data_dir": data,
        "seed": seed,
        "fill_latency_ms": fill_latency_ms,
        "partial_slices": partial_slices,
        "reject_rate": reject_rate,
        "day_length_s": day_length_s,
        "tick_ms": tick_ms,
        "latency_ms": latency_ms,
        "error_rate": error_rate,
        "accept_then_timeout_rate": accept_then_timeout_rate,
        "garbage_rate": garbage_rate,
        "hang_ms": hang_ms,
        "no_price": no_price,
    }
    config = SimConfig(**{k: v for k, v in given.items() if v is not None})
    typer.echo(f"brokersim listening on http://{config.host}:{config.port} data={config.data_dir}")
    run(config)


def _client(url: str | None) -> httpx.Client:
    from core.settings import get_settings

    settings = get_settings()
    return httpx.Client(
        base_url=url or settings.brokerage_url,
        headers={
            "APCA-API-KEY-ID": settings.brokerage_key,
            "APCA-API-SECRET-KEY": settings.brokerage_secret,
        },
        timeout=10,
    )


def _call(url: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    with _client(url) as client:
        response = client.request(method, path, json=body)
    if response.status_code >= 400:
        typer.echo(f"{response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)
    return response.json()


@app.command()
def orders(url: Url = None, as_json: AsJson = False) -> None:
    """Every order the simulator holds, oldest first."""
    rows = _call(url, "GET", "/admin/orders")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for o in rows:
        typer.echo(
            f"{o['submitted_at']}  {o['client_order_id']:<36} {o['side']:<4} {o['qty']:>10} "
            f"{o['symbol']:<6} {o['type']:<6} {o['status']:<16} filled {o['filled_qty']}"
            f" @ {o['filled_avg_price'] or '-'}"
        )
    typer.echo(f"{len(rows)} orders")


@app.command()
def positions(url: Url = None, as_json: AsJson = False) -> None:
    """Current positions, derived from fills."""
    rows = _call(url, "GET", "/v2/positions")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for p in rows:
        typer.echo(f"{p['symbol']:<8} {p['qty']:>12} @ {p['avg_entry_price']:<12} {p['side']}")
    typer.echo(f"{len(rows)} positions")


@app.command()
def faults(
    url: Url = None,
    latency_ms: Annotated[int | None, typer.Option()] = None,
    error_rate: Annotated[float | None, typer.Option()] = None,
    error_count: Annotated[int | None, typer.Option()] = None,
    accept_then_timeout: Annotated[
        float | None, typer.Option(help="rate in [0, 1] of stored-then-stalled submissions")
    ] = None,
    accept_then_timeout_count: Annotated[int | None, typer.Option()] = None,
    garbage_rate: Annotated[float | None, typer.Option()] = None,
    hang_ms: Annotated[int | None, typer.Option()] = None,
    pause_fills: Annotated[bool | None, typer.Option("--pause-fills/--resume-fills")] = None,
    stream_down: Annotated[bool | None, typer.Option("--stream-down/--stream-up")] = None,
    reset: Annotated[bool, typer.Option(help="clear every fault first")] = False,
) -> None:
    """Show the fault knobs, or change the ones given."""
    changes: dict[str, Any] = {
        "latency_ms": latency_ms,
        "error_rate": error_rate,
        "error_count": error_count,
        "accept_then_timeout_rate": accept_then_timeout,
        "accept_then_timeout_count": accept_then_timeout_count,
        "garbage_rate": garbage_rate,
        "hang_ms": hang_ms,
        "fills_paused": pause_fills,
        "stream_down": stream_down,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if reset:
        changes = {
            "latency_ms": 0,
            "error_rate": 0.0,
            "error_count": 0,
            "garbage_rate": 0.0,
            "garbage_count": 0,
            "accept_then_timeout_rate": 0.0,
            "accept_then_timeout_count": 0,
            **changes,
        }
    result = (
        _call(url, "POST", "/admin/faults", changes)
        if changes
        else _call(url, "GET", "/admin/faults")
    )
    typer.echo(json.dumps(result, indent=2))
