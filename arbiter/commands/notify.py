"""`arbiter notify`: notification rules (events -> Apprise URL), a test message, deliveries.

URLs hold secrets (webhook tokens, passwords): they are stored as given and only ever shown
masked."""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.notifier import AppriseNotifier
from arbiter.commands import common
from core.errors import NotificationFailed
from core.notifications import Message, mask_url, parse_rule
from db import notifications as store
from db.models import NotificationRule

app = typer.Typer(help="Alerts to Slack, Discord, e-mail, webhooks... through Apprise.",
                  no_args_is_help=True)
rules = typer.Typer(help="Which events go where.", no_args_is_help=True)
app.add_typer(rules, name="rules")

RULE_COLUMNS = ("id", "events", "strategy", "ticker", "url", "origin")
DELIVERY_COLUMNS = ("id", "rule_id", "event_type", "status", "attempts", "title", "last_error",
                    "created_at", "sent_at")


def _rule_row(rule: NotificationRule) -> common.Row:
    return {
        "id": rule.id,
        "events": ",".join(rule.event_types),
        "strategy": rule.strategy,
        "ticker": rule.ticker,
        "url": mask_url(rule.url),
        "origin": rule.origin,
        "created_at": rule.created_at,
    }


@rules.command("add")
def add(
    events: Annotated[str, typer.Option("--events", help="event types, comma separated")],
    url: Annotated[str, typer.Option("--url", help="an Apprise URL, e.g. json://host/path")],
    strategy: Annotated[str | None, typer.Option(help="only this strategy's events")] = None,
    ticker: Annotated[str | None, typer.Option(help="only this ticker's events")] = None,
    as_json: common.AsJson = False,
) -> None:
    """Send EVENTS (optionally of one strategy or ticker) to URL."""
    with common.guarded():
        types, url, strategy, ticker = parse_rule(events, url, strategy, ticker)
        AppriseNotifier().check(url)
    with common.unit_of_work() as uow:
        rule = store.add_rule(uow.session, types, url, strategy, ticker)
        uow.commit()
        row = _rule_row(rule)
    if as_json:
        common.print_json(row)
    else:
        common.console.print(f"rule {row['id']}: {row['events']} -> {row['url']}")


@rules.command("list")
def list_(as_json: common.AsJson = False) -> None:
    """Every rule, URLs masked."""
    with common.unit_of_work() as uow:
        rows = [_rule_row(rule) for rule in store.list_rules(uow.session)]
    common.show_rows(rows, as_json=as_json, columns=RULE_COLUMNS, empty="no notification rules")


@rules.command("remove")
def remove(rule_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Delete a rule (and its delivery records)."""
    with common.unit_of_work() as uow:
        store.remove_rule(uow.session, rule_id)
        uow.commit()
    common.console.print(f"rule {rule_id} removed")


@app.command("test")
def test(url: Annotated[str, typer.Argument(metavar="URL")]) -> None:
    """Send a test message to URL now (exit 1 if it was not delivered)."""
    settings = common.settings()
    notifier = AppriseNotifier(timeout_s=settings.notify_timeout_s)
    with common.guarded():
        parse_rule("order_needs_review", url, None, None)
        notifier.check(url)
    try:
        notifier.send(url, Message("Arbiter: test", "This is a test message from Arbiter."))
    except NotificationFailed as exc:
        common.fail(str(exc), code=1)
    common.console.print(f"sent to {mask_url(url)}")


@app.command("deliveries")
def deliveries(
    failed: Annotated[bool, typer.Option("--failed", help="only those that failed")] = False,
    limit: common.Limit = 50,
    as_json: common.AsJson = False,
) -> None:
    """Recent deliveries, newest first."""
    with common.unit_of_work() as uow:
        rows = [
            {
                "id": d.id,
                "rule_id": d.rule_id,
                "event_id": d.event_id,
                "event_type": d.event_type,
                "status": d.status,
                "attempts": d.attempts,
                "in_digest": d.in_digest,
                "title": d.title,
                "body": d.body,
                "last_error": d.last_error,
                "created_at": d.created_at,
                "sent_at": d.sent_at,
            }
            for d in store.list_deliveries(uow.session, failed_only=failed, limit=limit)
        ]
    common.show_rows(
        rows,
        as_json=as_json,
        columns=DELIVERY_COLUMNS,
        empty="no failed deliveries" if failed else "no deliveries yet",
    )

