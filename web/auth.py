"""Who may do what: API tokens (`Authorization: Bearer`) and dashboard sessions (a cookie).

Scopes are ordered read < trade < admin: reads need `read`, `POST /api/v1/signals` needs
`trade`, every other change needs `admin`. Routes declare it with `Depends(require("read"))`.

The dashboard signs in with a token (`POST /login`, form field `token`) and then holds an
HttpOnly, SameSite=Strict session cookie; the session row keeps a CSRF token, which every
state-changing request made with the cookie must carry (form field `csrf_token` or header
`X-CSRF-Token`); templates get it from `csrf_token(request)`. Five bad sign-ins in a row from
one address answer 429 for a while (longer each time). Tokens never appear in a URL or a log.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal

import redis
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from db import tokens as token_store
from web.runtime import WebRuntime, runtime_of

log = logging.getLogger(__name__)

Scope = Literal["read", "trade", "admin"]
SESSION_COOKIE = "arbiter_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BAD_SIGN_INS = 5
BLOCK_BASE_S = 30
BLOCK_MAX_S = 900
FAILURES_KEY = "arbiter:web:signin-failures:{}"
BLOCKED_KEY = "arbiter:web:signin-blocked:{}"


@dataclass(frozen=True)
class Principal:
    """The caller: the token it holds, and how it presented it."""

    token_id: int
    name: str
    scope: str
    strategy: str | None
    via: Literal["bearer", "cookie"]
    csrf_token: str | None = None

    def allows(self, scope: str) -> bool:
        return token_store.scope_allows(self.scope, scope)


def unauthenticated(detail: str = "authentication required: send Authorization: Bearer <token>"
                    ) -> HTTPException:  # fmt: skip
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _from_bearer(rt: WebRuntime, secret: str) -> Principal | None:
    with rt.database.unit_of_work() as uow:
        token = token_store.token_for(uow.session, secret)
        if token is None:
            return None
        token_store.touch(uow.session, token)
        uow.commit()
        return Principal(token.id, token.name, token.scope, token.strategy, "bearer")


def _from_cookie(rt: WebRuntime, session_id: str) -> Principal | None:
    with rt.database.sessions() as session:
        row = token_store.session_for(session, session_id)
        if row is None:
            return None
        token = row.token
        return Principal(token.id, token.name, token.scope, token.strategy, "cookie",
                         row.csrf_token)  # fmt: skip


async def authenticate(request: Request) -> Principal:
    """The caller, from its bearer token or its session cookie; 401 if neither is good.
    A cookie-authenticated change must carry the session's CSRF token (403 otherwise)."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    rt = runtime_of(request)
    header = request.headers.get("authorization")
    if header is not None:
        kind, _, secret = header.partition(" ")
        if kind.lower() != "bearer" or not secret.strip():
            raise unauthenticated("malformed Authorization header: use Bearer <token>")
        principal = await run_in_threadpool(_from_bearer, rt, secret.strip())
        if principal is None:
            raise unauthenticated("unknown or revoked token")
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise unauthenticated()
        principal = await run_in_threadpool(_from_cookie, rt, cookie)
        if principal is None:
            raise unauthenticated("session expired or signed out: sign in again")
        if request.method not in SAFE_METHODS:
            await check_csrf(request, principal)
    request.state.principal = principal
    return principal


async def check_csrf(request: Request, principal: Principal) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = principal.csrf_token or ""
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(403, "missing or wrong CSRF token")


def require(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, if its token's scope covers `scope` (401 / 403 otherwise)."""
    if scope not in token_store.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if not principal.allows(scope):
            raise HTTPException(403, f"this needs a {scope} token; yours is {principal.scope}")
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


def csrf_token(request: Request) -> str:
    """The signed-in session's CSRF token, for forms (`<input name="csrf_token">`) and for
    htmx (`hx-headers='{"X-CSRF-Token": "..."}'`); empty when not signed in by cookie."""
    principal = getattr(request.state, "principal", None)
    return (principal.csrf_token or "") if isinstance(principal, Principal) else ""


# -- sign-in and sign-out ---------------------------------------------------------------------

router = APIRouter(tags=["auth"])


def _client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _blocked_for(rt: WebRuntime, who: str) -> int:
    """Seconds this address must still wait (0: it may try)."""
    try:
        ttl = int(rt.redis.ttl(BLOCKED_KEY.format(who)))
    except redis.RedisError:
        return 0  # no Redis: no slow-down, but tokens are 256 bits anyway
    return max(ttl, 0)


def _note_failure(rt: WebRuntime, who: str) -> int:
    """Count a bad sign-in; from the fifth in a row, block the address (doubling each time)."""
    try:
        failures = int(rt.redis.incr(FAILURES_KEY.format(who)))
        rt.redis.expire(FAILURES_KEY.format(who), BLOCK_MAX_S * 2)
        if failures < MAX_BAD_SIGN_INS:
            return 0
        block = min(BLOCK_MAX_S, BLOCK_BASE_S * 2 ** (failures - MAX_BAD_SIGN_INS))
        rt.redis.set(BLOCKED_KEY.format(who), "1", ex=block)
        return int(block)
    except redis.RedisError:
        return 0


def _forget_failures(rt: WebRuntime, who: str) -> None:
    with contextlib.suppress(redis.RedisError):
        rt.redis.delete(FAILURES_KEY.format(who), BLOCKED_KEY.format(who))


def _too_many(wait_s: int) -> HTTPException:
    return HTTPException(429, f"too many bad sign-ins: try again in {wait_s} s",
                         headers={"Retry-After": str(wait_s)})  # fmt: skip


def _sign_in(rt: WebRuntime, secret: str) -> token_store.NewSession | None:
    with rt.database.unit_of_work() as uow:
        token = token_store.token_for(uow.session, secret)
        if token is None:
            return None
        lifetime = timedelta(hours=rt.settings.web_session_hours)
        opened = token_store.open_session(uow.session, token, lifetime)
        token_store.touch(uow.session, token)
        uow.commit()
        return opened


def _safe_next(target: str | None) -> str:
    """Only a local path: never redirect a sign-in off this site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.post("/login", summary="Sign in with a token; sets the session cookie")
async def login(request: Request) -> Response:
    rt = runtime_of(request)
    who = _client_key(request)
    wait = await run_in_threadpool(_blocked_for, rt, who)
    if wait:
        raise _too_many(wait)
    form = await request.form()
    token = form.get("token")
    target = form.get("next")
    opened = (
        await run_in_threadpool(_sign_in, rt, token.strip())
        if isinstance(token, str) and token.strip()
        else None
    )
    if opened is None:
        block = await run_in_threadpool(_note_failure, rt, who)
        log.warning("bad sign-in from %s", who)  # never the token itself
        if block:
            raise _too_many(block)
        raise HTTPException(401, "unknown or revoked token")
    await run_in_threadpool(_forget_failures, rt, who)
    response: Response
    if "application/json" in request.headers.get("accept", ""):
        response = JSONResponse({"signed_in": True, "csrf_token": opened.csrf_token})
    else:
        response = RedirectResponse(_safe_next(target if isinstance(target, str) else None), 303)
    response.set_cookie(
        SESSION_COOKIE,
        opened.session_id,
        max_age=int(rt.settings.web_session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=rt.settings.web_secure_cookies or request.url.scheme == "https",
        path="/",
    )
    return response


def _sign_out(rt: WebRuntime, session_id: str) -> None:
    with rt.database.unit_of_work() as uow:
        token_store.close_session(uow.session, session_id)
        uow.commit()


@router.post("/logout", summary="Sign out: ends the session (needs its CSRF token)")
async def logout(request: Request) -> Response:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        raise unauthenticated("not signed in")
    rt = runtime_of(request)
    principal = await run_in_threadpool(_from_cookie, rt, session_id)
    if principal is None:
        raise unauthenticated("session expired or signed out")
    await check_csrf(request, principal)
    await run_in_threadpool(_sign_out, rt, session_id)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# Route parameters: `who: AdminAccess` instead of `who: Principal = Depends(require("admin"))`.
ReadAccess = Annotated[Principal, Depends(require("read"))]
TradeAccess = Annotated[Principal, Depends(require("trade"))]
AdminAccess = Annotated[Principal, Depends(require("admin"))]
