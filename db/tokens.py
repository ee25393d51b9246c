"""Web API tokens and dashboard sessions. Tokens are random (256 bits) and stored only as
their SHA-256, so a leaked table grants nothing; a revoked token's sessions die with it.
The session belongs to the caller: nothing here commits."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.signals import is_name
from db.models import ApiToken, WebSession

SCOPES = ("read", "trade", "admin")  # each includes the ones before it
TOKEN_PREFIX = "arb_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", re.ASCII)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def scope_allows(held: str, needed: str) -> bool:
    return SCOPES.index(held) >= SCOPES.index(needed)


@dataclass(frozen=True)
class NewToken:
    id: int
    name: str
    scope: str
    strategy: str | None
    token: str  # shown once, never stored


def create_token(session: Session, name: str, scope: str, strategy: str | None = None) -> NewToken:
    if not is_name(NAME_PATTERN, name):
        raise InvalidInput(f"token name {name!r}: 1-64 of A-Z a-z 0-9 _ . - (no spaces)")
    if scope not in SCOPES:
        raise InvalidInput(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
    if strategy is not None and scope != "trade":
        raise InvalidInput("only a trade token can be bound to a strategy")
    if (
        session.scalar(
            select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        )
        is not None
    ):
        raise InvalidInput(f"a live token named {name!r} exists (revoke it first)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, scope=scope, strategy=strategy, token_hash=digest(token))
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise InvalidInput(f"a live token named {name!r} exists (revoke it first)") from None
    return NewToken(row.id, name, scope, strategy, token)


def list_tokens(session: Session, *, include_revoked: bool = False) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_token(session: Session, name: str) -> ApiToken:
    row = session.scalar(
        select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    )
    if row is None:
        raise InvalidInput(f"no live token named {name!r}")
    row.revoked_at = datetime.now(UTC)
    session.execute(delete(WebSession).where(WebSession.token_id == row.id))
    session.flush()
    return row


def token_for(session: Session, secret: str) -> ApiToken | None:
    """The live token whose hash matches `secret` (None for unknown or revoked)."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 100:
        return None
    return session.scalar(
        select(ApiToken).where(ApiToken.token_hash == digest(secret), ApiToken.revoked_at.is_(None))
    )


def touch(session: Session, token: ApiToken) -> None:
    """Note the use (at most once a minute, to keep reads from writing on every request)."""
    now = datetime.now(UTC)
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))


# -- dashboard sessions -----------------------------------------------------------------------


@dataclass(frozen=True)
class NewSession:
    session_id: str  # the cookie's value, never stored
    csrf_token: str
    expires_at: datetime


def open_session(session: Session, token: ApiToken, lifetime: timedelta) -> NewSession:
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + lifetime
    session.add(
        WebSession(
            id_hash=digest(session_id), token_id=token.id, csrf_token=csrf, expires_at=expires
        )
    )
    # Sign-ins leave rows behind; sweep the expired ones while we are here.
    session.execute(delete(WebSession).where(WebSession.expires_at < datetime.now(UTC)))
    session.flush()
    return NewSession(session_id, csrf, expires)


def session_for(session: Session, session_id: str) -> WebSession | None:
    """The live session (unexpired, its token not revoked) for a cookie value."""
    if not session_id or len(session_id) > 100:
        return None
    row = session.get(WebSession, digest(session_id))
    if row is None or row.expires_at <= datetime.now(UTC) or row.token.revoked_at is not None:
        return None
    return row


def close_session(session: Session, session_id: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id_hash == digest(session_id)))
