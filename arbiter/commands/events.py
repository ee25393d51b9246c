"""`arbiter events`: read the event history, follow the live stream, publish an event, show
each type's payload schema, purge old history."""

from __future__ import annotations

import json
import re
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from arbiter.commands import common
from bootstrap import bootstrap
from core.errors import InvalidInput
from core.events import Event, EventType, parse_event_type, payload_schemas
from core.settings import Settings
from db.engine import Database
from db.event_history import (
    PURGE_BATCH,
    count_purgeable,
    list_events,
    purge_cutoff,
    purge_history,
)
from db.outbox import record_to_event
from strategy_client.external_events import publish_external
from strategy_client.subscriber import EventSubscriber

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
err = Console(stderr=True, highlight=False)

CONFLICT_TYPES = frozenset(
    {
        EventType.CONFLICT_DETECTED,
        EventType.ORDER_BLOCKED_BY_CONFLICT,
        EventType.PRIORITY_OVERRIDE,
        EventType.OWNERSHIP_TRANSFERRED,
        EventType.CONFLICT_RESOLVED,
    }
)
BAD_TYPES = frozenset(
    {
        EventType.ORDER_REJECTED,
        EventType.ORDER_FAILED,
        EventType.SIGNAL_REJECTED,
        EventType.RISK_LIMIT_EXCEEDED,
        EventType.KILL_SWITCH_ACTIVATED,
        EventType.RISK_ALERT,
        EventType.ERROR_OCCURRED,
        EventType.RECONCILIATION_MISMATCH,
        EventType.ORDER_NEEDS_REVIEW,
        EventType.POSITION_STOP_LOSS_TRIGGERED,
    }
)
GOOD_TYPES = frozenset(
    {
        EventType.ORDER_FILLED,
        EventType.ORDER_PARTIALLY_FILLED,
        EventType.POSITION_OPENED,
        EventType.POSITION_CLOSED,
    }
)
_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

TypeOption = Annotated[
    list[str] | None,
    typer.Option("--type", "-t", help="Only this event type (repeat for several)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON envelopes instead of a table.")]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _settings(*, redis: bool) -> tuple[Settings, str, str]:
    settings = common.settings()  # the environment, else a running `arbiter up`'s env file
    missing = [
        name
        for name, value in (
            ("ARBITER_DATABASE_URL", settings.database_url),
            ("ARBITER_REDIS_URL", settings.redis_url),
        )
        if not value and (redis or name == "ARBITER_DATABASE_URL")
    ]
    if missing:
        fail(
            f"{' and '.join(missing)} not set: start the services with `arbiter up`, "
            "or set ARBITER_DATABASE_URL / ARBITER_REDIS_URL"
        )
    return settings, settings.database_url or "", settings.redis_url or ""


def _unreachable(url: str, exc: Exception) -> NoReturn:
    shown = make_url(url).render_as_string(hide_password=True) if "://" in url else url
    fail(f"cannot reach Postgres at {shown} ({type(exc).__name__}); is `arbiter up` running?", 1)


def _types(values: list[str] | None) -> list[EventType] | None:
    if not values:
        return None
    try:
        return [parse_event_type(value) for value in values]
    except InvalidInput as exc:
        fail(str(exc))


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `1d`, `1w` ago, or an ISO 8601 time (UTC if it names no zone)."""
    match = _RELATIVE.match(value)
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"--since {value!r}: use e.g. 10m, 2h, 1d or an ISO time like 2025-01-31T09:30:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_age(value: str) -> timedelta:
    """`90d`, `12h`, `2w`, `30m`: a positive age."""
    match = _RELATIVE.match(value)
    if not match or int(match.group(1)) <= 0:
        raise InvalidInput(f"--older-than {value!r}: use a positive age like 90d, 12h or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _style(event_type: EventType) -> str:
    if event_type in CONFLICT_TYPES:
        return "bold white on red"
    if event_type in BAD_TYPES:
        return "red"
    if event_type in GOOD_TYPES:
        return "green"
    if event_type.value.startswith(("signal_", "order_")):
        return "cyan"
    return "magenta" if event_type.value.startswith("ownership_") else "white"


def _summary(payload: dict[str, Any], width: int = 70) -> str:
    text = json.dumps(payload, separators=(", ", "="), default=str)[1:-1].replace('"', "")
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("list")
def list_command(
    types: TypeOption = None,
    order: Annotated[int | None, typer.Option("--order", help="Order id.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Strategy name.")] = None,
    ticker: Annotated[str | None, typer.Option(help="Ticker.")] = None,
    since: Annotated[str | None, typer.Option(help="10m, 2h, 1d or an ISO time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The newest events from the durable history, oldest of them first."""
    settings, database_url, _ = _settings(redis=False)
    try:
        since_at = parse_since(since) if since else None
    except InvalidInput as exc:
        fail(str(exc))
    rt = bootstrap(settings, application_name="arbiter-cli", pool_size=1)
    try:
        with rt.database.sessions() as session:
            records = list_events(
                session,
                types=_types(types),
                order_id=order,
                strategy=strategy,
                ticker=ticker,
                since=since_at,
                limit=limit,
                newest_first=True,
            )
    except SQLAlchemyError as exc:
        _unreachable(database_url, exc)
    finally:
        rt.close()
    records.reverse()
    if as_json:
        envelopes = [json.loads(record_to_event(record).to_json()) for record in records]
        sys.stdout.write(json.dumps(envelopes) + "\n")
        return
    table = Table(title=f"{len(records)} events", title_justify="left")
    for column in ("seq", "occurred (UTC)", "type"):
        table.add_column(column, no_wrap=True)
    for column in ("source", "strategy", "ticker", "order", "payload"):
        table.add_column(column, overflow="fold")
    for record in records:
        event = record_to_event(record)
        table.add_row(
            str(record.seq),
            event.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"[{_style(event.type)}]{event.type.value}[/]",
            common.plain(event.source),
            common.plain(event.strategy or ""),
            common.plain(event.ticker or ""),
            str(event.order_id or ""),
            common.plain(_summary(event.payload)),
        )
    Console(highlight=False).print(table)


def _line(event: Event) -> str:
    style = _style(event.type)
    parts = [
        f"[dim]{event.occurred_at.strftime('%H:%M:%S.%f')[:-3]}[/]",
        f"[{style}]{event.type.value:<26}[/]",
    ]
    for label, value in (
        ("strategy", event.strategy),
        ("ticker", event.ticker),
        ("order", event.order_id),
    ):
        if value is not None:
            parts.append(f"{label}={escape(str(value))}")
    if event.source != "arbiter":
        parts.append(f"source={escape(event.source)}")
    if event.payload:
        parts.append(f"[dim]{escape(_summary(event.payload))}[/]")
    return "  ".join(parts)


@app.command("tail")
def tail_command(types: TypeOption = None, as_json: JsonOption = False) -> None:
    """Follow live events until Ctrl-C; conflict events stand out."""
    settings, database_url, redis_url = _settings(redis=True)
    chosen = _types(types)
    out = Console(highlight=False)

    def show(event: Event) -> None:
        if as_json:
            print(event.to_json(), flush=True)
        else:
            out.print(_line(event))

    subscriber = EventSubscriber(redis_url, database_url, settings.event_channel_prefix)
    subscriber.on(chosen, show)
    try:
        subscriber.run(threading.Event())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except SQLAlchemyError as exc:
        _unreachable(database_url, exc)


@app.command("publish")
def publish_command(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="e.g. debate_started")],
    source: Annotated[str, typer.Option(help="Who publishes (at most 64 characters).")],
    payload: Annotated[str, typer.Option(help="A JSON object.")] = "{}",
    strategy: Annotated[str | None, typer.Option(help="Strategy name.")] = None,
    ticker: Annotated[str | None, typer.Option(help="Ticker.")] = None,
    order: Annotated[int | None, typer.Option("--order", help="Order id.")] = None,
) -> None:
    """Publish an event from outside Arbiter (stored in the history, then on pub/sub)."""
    settings, database_url, _ = _settings(redis=True)
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        fail(f"--payload is not valid JSON: {exc}")
    rt = bootstrap(settings, application_name="arbiter-cli", pool_size=1)
    try:
        event = publish_external(
            rt.database,
            rt.publisher,
            event_type,
            source=source,
            payload=body,
            strategy=strategy,
            ticker=ticker,
            order_id=order,
        )
    except InvalidInput as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        _unreachable(database_url, exc)
    finally:
        rt.close()
    sys.stdout.write(event.to_json() + "\n")


@app.command("schema")
def schema_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object: wire name -> JSON Schema.")
    ] = False,
) -> None:
    """The payload of every event type, as JSON Schema."""
    schemas = payload_schemas()
    if as_json:
        sys.stdout.write(json.dumps(schemas, indent=2, sort_keys=True) + "\n")
        return
    table = Table("type", "payload fields")
    for name, schema in sorted(schemas.items()):
        fields = _schema_fields(schema)
        table.add_row(name, ", ".join(fields) if fields else "any JSON object")
    Console(highlight=False).print(table)


def _schema_fields(schema: dict[str, Any]) -> list[str]:
    """Field names of a payload schema (a union's: of each variant)."""
    definitions = schema.get("$defs", {})
    variants = [definitions[ref["$ref"].rsplit("/", 1)[1]] for ref in schema.get("oneOf", [])]
    names: list[str] = []
    for variant in variants or [schema]:
        names += [name for name in variant.get("properties", {}) if name not in names]
    return names


@app.command("purge")
def purge_command(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete history older than this: 90d, 12h, 2w.")
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Rows per delete (and per transaction).")
    ] = PURGE_BATCH,
    as_json: JsonOption = False,
) -> None:
    """Delete published events older than --older-than, in batches (as the beat's retention
    task does with ARBITER_EVENT_RETENTION_DAYS). Events not yet published are never deleted."""
    _, database_url, _ = _settings(redis=False)
    try:
        age = parse_age(older_than)
    except InvalidInput as exc:
        fail(str(exc))
    database = Database(database_url, pool_size=1)
    try:
        with database.sessions() as session:
            cutoff = purge_cutoff(session, age)
            count = count_purgeable(session, cutoff)
        shown = cutoff.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if count and not yes:
            typer.confirm(f"Delete {count} published events that occurred before {shown}?",
                          abort=True, err=True)
        report = purge_history(database, age, batch_size=batch_size, cutoff=cutoff)
    except InvalidInput as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        _unreachable(database_url, exc)
    finally:
        database.dispose()
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict()) + "\n")
    else:
        typer.echo(f"deleted {report.deleted} events that occurred before {shown} "
                   f"({report.batches} batches; unpublished events kept)")
