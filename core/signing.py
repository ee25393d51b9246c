"""Proof that a signal comes from its strategy: HMAC-SHA256 over the canonical body and a
timestamp, with the strategy's secret key (kept in Postgres, `arbiter strategies key NAME`).

The client signs `Signal.to_message()`; intake parses the message again, so both sides sign
the same normalised body whatever spelling the caller used ("10" or 10.0). The timestamp is
the signer's Unix time; the verifier compares it with the database's clock, and idempotency
on (strategy, signal_id) makes a replay within the window change nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from typing import Any

SIGNED_AT = "signed_at"
SIGNATURE = "signature"
AUTH_FIELDS = (SIGNED_AT, SIGNATURE)
# How far in the future a signer's clock may run before its signature is refused.
MAX_CLOCK_AHEAD_S = 300.0


def canonical(body: Mapping[str, Any]) -> bytes:
    """The signed bytes of a body: sorted keys, no spaces, ASCII only."""
    return json.dumps(dict(body), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signature(key: str, body: Mapping[str, Any], signed_at: int) -> str:
    digest = hmac.new(key.encode(), f"{signed_at}\n".encode() + canonical(body), hashlib.sha256)
    return digest.hexdigest()


def sign(key: str, body: Mapping[str, Any], signed_at: int) -> dict[str, Any]:
    """`body` with its timestamp and signature added."""
    return {**body, SIGNED_AT: signed_at, SIGNATURE: signature(key, body, signed_at)}


def split(message: Mapping[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """(body, signed_at, signature) of a message; the last two None when absent."""
    body = {k: v for k, v in message.items() if k not in AUTH_FIELDS}
    return body, message.get(SIGNED_AT), message.get(SIGNATURE)


def why_not_authentic(
    key: str, body: Mapping[str, Any], signed_at: Any, given: Any, *, now: float, max_age_s: float
) -> str | None:
    """None when `given` signs `body` at `signed_at` with `key` within the window ending at
    `now` (the database's clock); else the reason, for the REJECTED order."""
    if given is None or signed_at is None:
        return "unsigned"
    if isinstance(signed_at, bool) or not isinstance(signed_at, int) or not isinstance(given, str):
        return "signature fields malformed"
    if not math.isfinite(now) or signed_at < now - max_age_s:
        return f"stale: signed more than {max_age_s:.0f} s ago"
    if signed_at > now + MAX_CLOCK_AHEAD_S:
        return "signed in the future"
    if not hmac.compare_digest(signature(key, body, signed_at), given):
        return "bad signature"
    return None
