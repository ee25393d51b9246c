"""Notification rules, messages, digests and URL masking: the pure part."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.events import Event, EventType
from core.notifications import (
    IMPORTANT_EVENT_TYPES,
    Message,
    RuleView,
    describe,
    digest,
    known_event_type_names,
    mask_url,
    parse_rule,
)


def _blocked(**payload: object) -> Event:
    return Event(
        type=EventType.ORDER_BLOCKED_BY_CONFLICT,
        strategy="trading",
        ticker="NVDA",
        order_id=7,
        payload={
            "requesting_strategy_name": "trading",
            "owning_strategy_name": "long_term",
            "requesting_priority": 50,
            "owning_priority": 100,
            "action": "sell",
            "resolution": "blocked",
            "reasoning": "long_term owns NVDA with a lock until 2027-02-27",
            **payload,
        },
    )


def test_a_blocked_sell_reads_as_the_trader_would_say_it() -> None:
    lock = "2027-02-27T10:00:00+00:00"
    message = describe(_blocked(), {"side": "sell", "quantity": "10", "owner_locked_until": lock})
    assert message.body.startswith(
        "trading's sell of 10 NVDA was blocked: long_term (priority 100) owns NVDA, "
        "locked until 2027-02-27 10:00 UTC."
    )
    assert "Reasoning: long_term owns NVDA with a lock until 2027-02-27" in message.body
    assert message.kind == "warning"


def test_an_override_names_both_strategies_and_priorities() -> None:
    event = Event(
        type=EventType.PRIORITY_OVERRIDE,
        strategy="long_term",
        ticker="TSLA",
        payload={
            "requesting_strategy_name": "long_term",
            "requesting_priority": 100,
            "owning_strategy_name": "trading",
            "owning_priority": 50,
            "reasoning": "higher priority, no lock",
        },
    )
    body = describe(event, {"side": "buy", "quantity": "100"}).body
    assert "long_term (priority 100) took TSLA over from trading (priority 50)" in body
    assert "buy of 100 TSLA" in body


def test_older_payload_field_names_still_read() -> None:
    event = _blocked(requesting_strategy_name=None, owning_strategy_name=None)
    event = event.model_copy(
        update={"payload": {**event.payload, "owning_strategy": "long_term"}}
    )
    assert "long_term (priority 100) owns NVDA" in describe(event).body


@pytest.mark.parametrize(
    ("event_type", "payload", "words"),
    [
        (EventType.ORDER_NEEDS_REVIEW, {"reason": "fill after cancel"}, "needs a human look"),
        (EventType.RECONCILIATION_MISMATCH, {}, "disagree with the brokerage"),
        (EventType.KILL_SWITCH_ACTIVATED, {"reason": "drill"}, "kill switch is ON"),
        (EventType.KILL_SWITCH_DEACTIVATED, {}, "kill switch is off"),
        (EventType.ERROR_OCCURRED, {"task": "arbiter.submit", "error": "boom"}, "failed: boom"),
        (EventType.RISK_ALERT, {"level": "high"}, "risk alert"),
    ],
)
def test_every_important_type_has_words(
    event_type: EventType, payload: dict[str, object], words: str
) -> None:
    event = Event(type=event_type, strategy="trading", ticker="AAPL", payload=payload)
    assert words in describe(event).body


def test_a_rule_matches_type_then_strategy_then_ticker() -> None:
    rule = RuleView(1, frozenset({"order_blocked_by_conflict"}), strategy="trading", ticker="NVDA")
    assert rule.wants(_blocked())
    assert not RuleView(1, frozenset({"priority_override"})).wants(_blocked())
    assert not RuleView(1, frozenset({"order_blocked_by_conflict"}), strategy="x").wants(_blocked())
    assert not RuleView(1, frozenset({"order_blocked_by_conflict"}), ticker="AAPL").wants(
        _blocked()
    )


def test_rules_accept_names_in_any_case_and_the_daily_report() -> None:
    types, url, strategy, ticker = parse_rule(
        "ORDER_BLOCKED_BY_CONFLICT, priority_override,daily_report", " json://h/x ", None, "nvda"
    )
    assert types == ["daily_report", "order_blocked_by_conflict", "priority_override"]
    assert (url, strategy, ticker) == ("json://h/x", None, "NVDA")
    assert set(IMPORTANT_EVENT_TYPES) - known_event_type_names() <= {
        "position_stop_loss_triggered"
    }


@pytest.mark.parametrize(
    ("events", "url", "strategy", "ticker", "field"),
    [
        ("", "json://h", None, None, "events"),
        ("order_flied", "json://h", None, None, "events"),
        ("order_filled", "not a url", None, None, "url"),
        ("order_filled", "json://h\nx", None, None, "url"),
        ("order_filled", "json://" + "x" * 3000, None, None, "url"),
        ("order_filled", "json://h", "Long Term", None, "strategy"),
        ("order_filled", "json://h", None, "<script>", "ticker"),
    ],
)
def test_bad_rules_name_the_field(
    events: str, url: str, strategy: str | None, ticker: str | None, field: str
) -> None:
    with pytest.raises(InvalidInput, match=f"^{field}:"):
        parse_rule(events, url, strategy, ticker)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("json://127.0.0.1:8080/hook", "json://127.0.0.1:8080/***"),
        ("slack://TokenA/TokenB/TokenC", "slack://***/***"),
        ("discord://1234/secret-token", "discord://***/***"),
        ("mailto://user:hunter2@example.com", "mailto://example.com"),
        ("ntfy://ntfy.sh/my-topic?priority=high", "ntfy://ntfy.sh/***"),
        ("garbage", "***"),
    ],
)
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    for secret in ("TokenB", "secret-token", "hunter2", "my-topic"):
        assert secret not in mask_url(url)


def test_a_storm_becomes_one_digest_that_counts_everything() -> None:
    messages = [Message("t", f"order {i} blocked\nReasoning: r", "warning") for i in range(60)]
    result = digest(messages, 60)
    assert result.title == "Arbiter: 60 notifications in the last 1 min"
    assert result.body.count("\n- ") == 50  # 50 listed, then the rest counted
    assert "... and 10 more" in result.body
    assert "Reasoning" not in result.body  # one line per message
