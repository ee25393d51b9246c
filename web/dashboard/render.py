"""What every dashboard page shares: the signed-in viewer, templates with their filters, one
display time zone, and fragments (a page's live regions, re-fetched when events arrive).

A page is one Jinja2 template. Its live regions are `{% block %}`s: `?fragment=NAME` answers
that block alone, which is how the browser refreshes a region without reloading the page, and
how it catches up after a dropped event stream (it re-reads every region from the server).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from core.events import EventType
from web import auth
from web.auth import Principal

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
STATIC_PATH = "/static/dashboard"
# Scripts and styles only from this server (the shipped assets); bars sized by style attributes.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; "
            "style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")

NAV = (
    ("overview", "/", "Overview"),
    ("ownership", "/ownership", "Ownership"),
    ("conflicts", "/conflicts", "Conflicts"),
    ("orders", "/orders", "Orders"),
    ("positions", "/positions", "Positions & P&L"),
    ("review", "/review", "Review"),
    ("strategies", "/strategies", "Strategies"),
    ("events", "/events", "Events"),
)


class SignInRequired(Exception):  # a control-flow signal, answered with a redirect
    """Raised by a page dependency; answered with a redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def sign_in_url(next_path: str) -> str:
    return "/login" if next_path in ("", "/") else f"/login?next={quote(next_path, safe='/')}"


async def viewer(request: Request) -> Principal:
    """The signed-in viewer of a page (any scope reads); otherwise off to the sign-in page."""
    try:
        return await auth.authenticate(request)
    except HTTPException as exc:
        if exc.status_code == 401:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(path) from None
        raise


async def actor(request: Request) -> Principal:
    """An admin making a change from a form: the session cookie and the form's CSRF token."""
    try:
        return await auth.require("admin")(request)
    except HTTPException as exc:
        if exc.status_code == 401:
            raise SignInRequired("/") from None
        raise


Viewer = Annotated[Principal, Depends(viewer)]
Actor = Annotated[Principal, Depends(actor)]


# -- display time zone and formats ------------------------------------------------------------


def display_zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def zone_label(zone: tzinfo) -> str:
    return "UTC" if zone is UTC else str(zone)


def fmt_time(value: datetime | None, zone: tzinfo = UTC, *, seconds: bool = True) -> str:
    if value is None:
        return "—"
    local = value.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def fmt_clock(value: datetime | None, zone: tzinfo = UTC) -> str:
    return "—" if value is None else value.astimezone(zone).strftime("%H:%M:%S")


def fmt_decimal(value: Decimal | int | float | str | None, places: int | None = None) -> str:
    """Plain digits with thousands separators: `1,250.5`, never an exponent or storage zeros."""
    if value is None or value == "":
        return "—"
    number = Decimal(str(value))
    if places is not None:
        number = number.quantize(Decimal(1).scaleb(-places))
        return f"{number:,.{places}f}"
    text = format(number.normalize(), "f")
    whole, _, frac = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    grouped = f"{int(whole.lstrip('-') or 0):,}"
    result = sign + grouped + (f".{frac}" if frac else "")
    return "0" if result in ("-0", "0") else result


def fmt_money(value: Decimal | int | float | str | None) -> str:
    if value is None or value == "":
        return "—"
    number = Decimal(str(value))
    text = f"{abs(number):,.2f}"
    return f"-${text}" if number < 0 else f"${text}"


def pnl_class(value: Decimal | int | float | str | None) -> str:
    if value is None or value == "":
        return ""
    number = Decimal(str(value))
    return "pos" if number > 0 else "neg" if number < 0 else ""


def fmt_duration(seconds: float | None) -> str:
    """`89d 23h`, `4h 05m`, `3m 09s`, `12s`: the two largest units."""
    if seconds is None:
        return "—"
    left = max(int(seconds), 0)
    days, rest = divmod(left, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def fmt_ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    return f"{fmt_duration((now - value).total_seconds())} ago"


STATE_TONES = {
    "IDLE": "muted", "SIGNAL_RECEIVED": "info", "VALIDATING": "info", "ORDER_PENDING": "info",
    "ORDER_SENT": "accent", "PARTIAL_FILLED": "warn", "FULLY_FILLED": "good",
    "CANCELLED": "muted", "REJECTED": "bad", "FAILED": "bad",
    "allowed": "good", "blocked": "bad", "priority_override": "warn",
}  # fmt: skip


def badge(value: str | None) -> Markup:
    if not value:
        return Markup('<span class="badge muted">—</span>')
    tone = STATE_TONES.get(value, "muted")
    label = value.replace("_", " ")
    return Markup('<span class="badge {}" data-value="{}">{}</span>').format(tone, value, label)


def with_query(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (None removes one)."""
    params = {k: v for k, v in request.query_params.items() if k != "fragment"}
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


templates.env.filters.update(
    num=fmt_decimal, money=fmt_money, pnl_class=pnl_class, duration=fmt_duration, badge=badge
)
templates.env.globals.update(nav=NAV, static=STATIC_PATH, with_query=with_query)


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    page: str,
    title: str,
    status_code: int = 200,
) -> HTMLResponse:
    """The whole page, or with `?fragment=NAME` only that block of it (a live region)."""
    rt = request.app.state.runtime
    zone = display_zone(getattr(rt.settings, "web_display_timezone", None))
    principal = getattr(request.state, "principal", None)
    full: dict[str, Any] = {
        "request": request,
        "page": page,
        "title": title,
        "viewer": principal,
        "can_change": isinstance(principal, Principal) and principal.allows("admin"),
        "csrf_token": auth.csrf_token(request),
        "zone": zone,
        "zone_label": zone_label(zone),
        "event_types": [t.value for t in EventType],
        "time": lambda value, seconds=True: fmt_time(value, zone, seconds=seconds),
        "clock": lambda value: fmt_clock(value, zone),
        **context,
    }
    fragment = request.query_params.get("fragment")
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": PAGE_CSP}
    if fragment:
        compiled = templates.env.get_template(template)
        block = compiled.blocks.get(fragment)
        if block is None:
            raise HTTPException(404, f"this page has no live region {fragment!r}")
        html = "".join(block(compiled.new_context(full)))
        return HTMLResponse(html, status_code=status_code, headers=headers)
    return templates.TemplateResponse(
        request, template, full, status_code=status_code, headers=headers
    )


def now_utc() -> datetime:
    return datetime.now(UTC)
