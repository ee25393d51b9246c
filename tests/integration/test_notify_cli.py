"""`arbiter notify` and `arbiter report` against a real Postgres and a local webhook."""

from __future__ import annotations

import json

from db.engine import Database
from tests.fixtures.receiver import Receiver
from tests.integration.test_cli import Invoke, cli  # noqa: F401  (the fixture)


def test_rules_are_added_listed_masked_and_removed(cli: Invoke, receiver: Receiver) -> None:  # noqa: F811
    secret_url = f"json://user:s3cret@127.0.0.1:{receiver.port}/hook-token"
    added = cli("notify", "rules", "add", "--events", "order_blocked_by_conflict,PRIORITY_OVERRIDE",
                "--url", secret_url, "--ticker", "nvda", "--json")  # fmt: skip
    assert added.exit_code == 0, added.output
    rule = json.loads(added.output)
    assert rule["events"] == "order_blocked_by_conflict,priority_override"
    assert rule["ticker"] == "NVDA"
    listed = cli("notify", "rules", "list")
    assert "s3cret" not in listed.output and "hook-token" not in listed.output
    assert "127.0.0.1" in listed.output
    assert cli("notify", "rules", "remove", str(rule["id"])).exit_code == 0
    assert json.loads(cli("notify", "rules", "list", "--json").output) == []
    gone = cli("notify", "rules", "remove", str(rule["id"]))
    assert gone.exit_code == 2 and "no notification rule" in gone.output


def test_bad_rules_are_refused_naming_the_field(cli: Invoke) -> None:  # noqa: F811
    bad_type = cli("notify", "rules", "add", "--events", "order_flied", "--url", "json://h/x")
    assert bad_type.exit_code == 2 and "events: unknown event type 'order_flied'" in bad_type.output
    bad_url = cli("notify", "rules", "add", "--events", "order_filled", "--url", "nonsense")
    assert bad_url.exit_code == 2 and "url:" in bad_url.output
    unknown = cli("notify", "rules", "add", "--events", "order_filled", "--url", "nope://x/y")
    assert unknown.exit_code == 2 and "Apprise does not understand" in unknown.output


def test_a_test_message_goes_out_or_fails_with_exit_1(cli: Invoke, receiver: Receiver) -> None:  # noqa: F811
    sent = cli("notify", "test", receiver.url)
    assert sent.exit_code == 0, sent.output
    assert receiver.bodies() == ["This is a test message from Arbiter."]
    receiver.status = 503
    failed = cli("notify", "test", receiver.url)
    assert failed.exit_code == 1 and "/hook" not in failed.output


def test_deliveries_lists_failures(cli: Invoke, db: Database) -> None:  # noqa: F811
    assert "no failed deliveries" in cli("notify", "deliveries", "--failed").output


def test_the_report_renders_in_every_format(cli: Invoke, tmp_path) -> None:  # noqa: F811
    as_json = cli("report", "--since", "12h", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["period_days"] == 0.5
    markdown = cli("report", "--format", "md")
    assert "## Conflicts by resolution per strategy" in markdown.output
    out = tmp_path / "report.html"
    assert cli("report", "--format", "html", "--out", str(out)).exit_code == 0
    assert out.read_text().startswith("<!doctype html>")
    for args, words in (
        (["--since", "yesterday"], "--since 'yesterday'"),
        (["--format", "pdf"], "--format 'pdf'"),
        (["--out", str(tmp_path / "missing" / "r.md")], "cannot write"),
    ):
        result = cli("report", *args)
        assert result.exit_code == 2 and words in result.output, result.output
