"""Issue 13, the pure parts: signal bounds (3), settings cross-checks (12), signatures (7),
and Alpaca's 403s read by their body (5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError

from adapters.alpaca import translate
from core.errors import BrokerageAuthError, BrokerageRejected, InvalidSignal
from core.settings import Settings
from core.signals import Signal
from core.signing import sign, why_not_authentic

BASE = {"strategy": "trading", "signal_id": "s-1", "ticker": "AAPL", "side": "buy", "quantity": "1"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"order_type": "limit", "limit_price": "1e-1001"}, "limit_price"),
        ({"order_type": "limit", "limit_price": "0.0000000001"}, "limit_price"),
        ({"order_type": "limit", "limit_price": "1e99999999"}, "limit_price"),
        ({"quantity": "1e-1001"}, "quantity"),
        ({"strategy": "long_term\n"}, "strategy"),
        ({"signal_id": "abc\n"}, "signal_id"),
        ({"ticker": "\u017ft"}, "ticker"),  # long s: upper() makes it "ST"
        ({"ticker": "AAPL\n"[:4] + "\u0130"}, "ticker"),
        ({"side": "BUY\u0131"}, "side"),
    ],
)
def test_a_signal_that_parses_but_means_nothing_is_refused(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidSignal) as raised:
        Signal.parse({**BASE, **changes})
    assert raised.value.field == field


def test_a_fine_limit_price_with_nine_decimals_is_kept_exactly() -> None:
    signal = Signal.parse({**BASE, "order_type": "limit", "limit_price": "12.123456789"})
    assert str(signal.limit_price) == "12.123456789"


def test_an_error_quotes_at_most_a_line_of_a_huge_value() -> None:
    with pytest.raises(InvalidSignal) as raised:
        Signal.parse({**BASE, "ticker": "X" * 1_000_000})
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"visibility_timeout_s": 100, "task_time_limit_s": 120}, "ARBITER_VISIBILITY_TIMEOUT_S"),
        ({"visibility_timeout_s": 140, "task_time_limit_s": 120}, "retry backoff"),
        ({"never_received_grace_s": 8, "brokerage_timeout_s": 5}, "ARBITER_NEVER_RECEIVED_GRACE_S"),
    ],
)
def test_settings_that_contradict_each_other_are_refused_at_start_up(
    values: dict[str, Any], names: str
) -> None:
    with pytest.raises(ValueError, match=names):
        Settings(**values)


def test_the_default_settings_are_consistent() -> None:
    Settings()


def test_a_signature_proves_body_key_and_time() -> None:
    body = {"strategy": "trading", "quantity": "1"}
    message = sign("k", body, 1_000_000)
    args = (message["signed_at"], message["signature"])
    assert why_not_authentic("k", body, *args, now=1_000_010, max_age_s=60) is None
    assert why_not_authentic("other", body, *args, now=1_000_010, max_age_s=60) == "bad signature"
    assert why_not_authentic("k", {**body, "quantity": "2"}, *args, now=1_000_010, max_age_s=60)
    assert "stale" in str(why_not_authentic("k", body, *args, now=1_001_000, max_age_s=60))
    assert why_not_authentic("k", body, None, None, now=1_000_010, max_age_s=60) == "unsigned"


def _api_error(status: int, body: dict[str, Any]) -> APIError:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    http_error = requests.HTTPError(response=response)
    return APIError(json.dumps(body), http_error)


@pytest.mark.parametrize(
    "message", ["insufficient buying power", "potential wash trade detected. use complex orders"]
)
def test_an_alpaca_403_business_refusal_is_a_rejection_with_its_reason(message: str) -> None:
    error = translate(_api_error(403, {"code": 40310000, "message": message}))
    assert isinstance(error, BrokerageRejected)
    assert message in str(error)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"code": 40110000, "message": "request is not authorized"}),
        (403, {"code": 40110000, "message": "request is not authorized"}),
        (403, {"message": "forbidden"}),
    ],
)
def test_an_alpaca_refusal_of_the_credentials_stays_an_auth_error(
    status: int, body: dict[str, Any]
) -> None:
    assert isinstance(translate(_api_error(status, body)), BrokerageAuthError)
