"""The sign-in page. The form posts the token to `POST /login` (web.auth), which sets the
HttpOnly, SameSite=Strict session cookie; the token never goes into a URL."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from web import auth
from web.dashboard.render import render

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Only a path on this site (never `//host` or a scheme): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def sign_in_page(request: Request, next: str | None = None) -> Response:
    target = safe_next(next)
    if request.cookies.get(auth.SESSION_COOKIE):
        try:
            await auth.authenticate(request)
            return RedirectResponse(target, 303)
        except HTTPException:
            pass  # an expired session: sign in again
    return render(request, "signin.html", {"next": target}, page="signin", title="Sign in")
