"""The dashboard's pages over HTTP (no browser): sign-in redirects, every page and every live
region renders, stored `<script>` comes back as text, forms need the CSRF token and an admin
session, and assets are served from the package."""

from __future__ import annotations

import re

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from db.engine import Database
from db.models import ReviewItem
from tests.fixtures.web import Tokens
from tests.web import seed

PAGES = ("/", "/ownership", "/conflicts", "/orders", "/positions", "/review", "/strategies",
         "/events")  # fmt: skip
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(autouse=True)
def _no_sign_in_block(redis_url: str) -> None:
    """Other tests' wrong tokens (same client address) must not block these sign-ins."""
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter("arbiter:web:signin-*"))
    if keys:
        client.delete(*keys)
    client.close()


def sign_in(api: TestClient, token: str) -> str:
    """Sign in with the form as a browser would; returns the page's CSRF token."""
    response = api.post("/login", data={"token": token, "next": "/"}, follow_redirects=False)
    assert response.status_code == 303
    page = api.get("/strategies")
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def regions(html: str) -> list[str]:
    return re.findall(r'data-region="([a-z_]+)"', html)


def test_a_visitor_without_a_session_is_sent_to_sign_in(api: TestClient) -> None:
    for path in PAGES:
        response = api.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login")
    assert api.get("/login").status_code == 200
    assert "/login?next=/orders%3Fstate%3DFAILED" in api.get(
        "/orders?state=FAILED", follow_redirects=False).headers["location"]  # fmt: skip


def test_every_page_and_live_region_renders(
    api: TestClient, tokens: Tokens, db: Database
) -> None:
    order_id = seed.order(db, "long_term", "sig-1", ticker="NVDA")
    sign_in(api, tokens.read)
    for path in (*PAGES, f"/orders/{order_id}", "/ownership/NVDA"):
        page = api.get(path)
        assert page.status_code == 200, (path, page.text[-500:])
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for name in regions(page.text):
            joiner = "&" if "?" in path else "?"
            fragment = api.get(f"{path}{joiner}fragment={name}")
            assert fragment.status_code == 200, (path, name, fragment.text[-500:])
            assert "<html" not in fragment.text
    assert api.get("/orders?fragment=nope").status_code == 404
    assert api.get("/static/dashboard/dashboard.js").status_code == 200


def test_script_in_stored_text_is_shown_as_text(
    api: TestClient, tokens: Tokens, db: Database
) -> None:
    # Names and reasons straight into the tables, as a hostile or careless writer could.
    order_id = seed.order(db, "trading", "sig-x", ticker="AMD")
    with db.unit_of_work() as uow:
        uow.session.execute(text("UPDATE orders SET reason = :r, strategy_name = :s "
                                 "WHERE id = :i"), {"r": SCRIPT, "s": SCRIPT, "i": order_id})
        uow.session.execute(text("UPDATE strategies SET display_name = :r WHERE name = 'trading'"),
                            {"r": SCRIPT})
        uow.session.add(ReviewItem(kind="order", order_id=order_id, ticker="AMD", reason=SCRIPT,
                                   details={"note": SCRIPT}))
        uow.commit()  # fmt: skip
    sign_in(api, tokens.admin)
    for path in ("/orders", f"/orders/{order_id}", "/review", "/strategies"):
        body = api.get(path).text
        assert SCRIPT not in body, path
        assert "&lt;script&gt;" in body or "\\u003cscript\\u003e" in body, path


def test_forms_need_the_csrf_token_and_an_admin(
    api: TestClient, tokens: Tokens, db: Database
) -> None:
    csrf = sign_in(api, tokens.admin)
    refused = api.post("/strategies/trading/priority", data={"priority": "77"})
    assert refused.status_code == 403
    done = api.post("/strategies/trading/priority", data={"priority": "77", "csrf_token": csrf},
                    follow_redirects=False)  # fmt: skip
    assert done.status_code == 303
    assert 'value="77"' in api.get("/strategies").text
    assert api.post("/strategies/trading/priority",
                    data={"priority": "-3", "csrf_token": csrf}).status_code == 422

    api.cookies.clear()
    read_csrf = sign_in(api, tokens.read)
    page = api.get("/strategies").text
    assert "data-testid=\"save-trading\"" not in page  # a reader sees no forms
    forbidden = api.post("/strategies/trading/priority",
                         data={"priority": "1", "csrf_token": read_csrf})  # fmt: skip
    assert forbidden.status_code == 403


@pytest.mark.parametrize("state", ["", "CANCELLED"])
def test_resolving_a_review_item_records_the_note(
    api: TestClient, tokens: Tokens, db: Database, state: str
) -> None:
    order_id = seed.order(db, "trading", "sig-r", ticker="AMD")
    with db.unit_of_work() as uow:
        from db.order_manager import OrderManager

        OrderManager(uow.session).flag_for_review(order_id, "check me", actor="test")
        uow.commit()
        item_id = uow.session.query(ReviewItem.id).scalar()
    csrf = sign_in(api, tokens.admin)
    missing = api.post(f"/review/{item_id}/resolve", data={"note": " ", "csrf_token": csrf})
    assert missing.status_code == 422 and "Write a note" in missing.text
    done = api.post(f"/review/{item_id}/resolve", follow_redirects=False,
                    data={"note": "looked", "state": state, "csrf_token": csrf})  # fmt: skip
    assert done.status_code == 303
    again = api.post(f"/review/{item_id}/resolve", follow_redirects=False,
                     data={"note": "looked", "csrf_token": csrf})  # fmt: skip
    assert again.status_code == 303  # a second click changes nothing and is no error
    with db.unit_of_work() as uow:
        item = uow.session.get(ReviewItem, item_id)
        assert item is not None and item.resolution_note == "looked"
        found = uow.session.execute(text("SELECT state FROM orders WHERE id = :i"),
                                    {"i": order_id}).scalar()  # fmt: skip
    assert found == (state or "SIGNAL_RECEIVED")
