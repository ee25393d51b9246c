"""Security of the web API: every route but /healthz needs a token, reads cannot change,
cookie-authenticated changes need the CSRF token, hostile text comes back inert."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from db.engine import Database
from tests.fixtures.web import Tokens
from tests.web import seed

PUBLIC = {"/healthz", "/login", "/logout"}  # sign-in itself, and sign-out (cookie + CSRF)
SAMPLE = {"name": "trading", "ticker": "AAPL", "key": "1", "item_id": "1"}


def routes(api: TestClient) -> list[tuple[str, str]]:
    """Every documented route (the OpenAPI schema lists them all) but the public ones."""
    found = []
    for template, operations in api.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if template in PUBLIC:
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], template)
        found += [(method.upper(), path) for method in operations]
    return sorted(found)


def test_the_app_has_the_routes_we_check(api: TestClient) -> None:
    checked = routes(api)
    assert len(checked) >= 25
    assert ("POST", "/api/v1/signals") in checked
    assert ("GET", "/metrics") in checked


def test_every_route_without_a_token_is_401(api: TestClient) -> None:
    undocumented = [("GET", "/docs"), ("GET", "/openapi.json"),
                    ("GET", "/docs/assets/swagger-ui.css")]  # fmt: skip
    for method, path in routes(api) + undocumented:
        response = api.request(method, path)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers.get("www-authenticate") == "Bearer"


def test_every_change_with_a_read_token_is_403(api: TestClient, tokens: Tokens) -> None:
    changes = [(m, p) for m, p in routes(api) if m not in ("GET", "HEAD")]
    assert changes
    for method, path in changes:
        response = api.request(method, path, headers=tokens.headers("read"), json={})
        assert response.status_code == 403, (method, path, response.status_code)


def test_only_signals_accept_a_trade_token(api: TestClient, tokens: Tokens) -> None:
    for method, path in routes(api):
        if method in ("GET", "HEAD") or path == "/api/v1/signals":
            continue
        response = api.request(method, path, headers=tokens.headers("trade"), json={})
        assert response.status_code == 403, (method, path)


def test_cookie_form_post_without_csrf_is_403(api: TestClient, tokens: Tokens) -> None:
    api.post("/login", data={"token": tokens.admin})
    for method, path in routes(api):
        if method in ("GET", "HEAD"):
            continue
        response = api.request(method, path, data={"reason": "no csrf"})
        assert response.status_code == 403, (method, path, response.status_code)
    wrong = api.post("/api/v1/kill-switch/on", headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403


@pytest.mark.parametrize(
    "field", ["ticker", "strategy", "signal_id"], ids=lambda f: f"script-in-{f}"
)
def test_script_in_a_signal_field_is_refused_by_name(
    api: TestClient, tokens: Tokens, field: str
) -> None:
    body = {"strategy": "trading", "signal_id": "x-1", "ticker": "AAPL", "side": "buy",
            "quantity": 1, field: "<script>alert(1)</script>"}  # fmt: skip
    response = api.post("/api/v1/signals", json=body, headers=tokens.headers("trade"))
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.headers["content-type"] == "application/json"


def test_script_in_stored_text_comes_back_as_inert_json(
    api: TestClient, tokens: Tokens, db: Database
) -> None:
    hostile = '<script>alert("x")</script>'
    order_id = seed.order(db, "trading", "xss-1", ticker="NVDA")
    seed.conflict(db, order_id, "NVDA", "trading", "long_term", "blocked", hostile)
    seed.flag(db, order_id, hostile)
    read = tokens.headers("read")
    for path in ("/api/v1/conflicts", "/api/v1/review", f"/api/v1/orders/{order_id}"):
        response = api.get(path, headers=read)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert hostile in response.text.replace('\\"', '"')  # data, unchanged, as a JSON string


def test_trade_token_bound_to_a_strategy_sends_only_its_signals(
    api: TestClient, make_token: object
) -> None:
    assert callable(make_token)
    token = make_token("trade", strategy="trading")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"strategy": "long_term", "signal_id": "b-1", "ticker": "AAPL", "side": "buy",
            "quantity": 1}  # fmt: skip
    assert api.post("/api/v1/signals", json=body, headers=headers).status_code == 403


def test_docs_are_served_from_the_package_to_a_signed_in_reader(
    api: TestClient, tokens: Tokens
) -> None:
    read = tokens.headers("read")
    page = api.get("/docs", headers=read)
    assert page.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in page.text
    assert api.get("/docs/assets/swagger-ui-bundle.js", headers=read).status_code == 200
    assert api.get("/docs/assets/..%2Fx", headers=read).status_code == 404
    schema = api.get("/openapi.json", headers=read).json()
    assert schema["security"] == [{"bearer": []}]


def test_no_cors_unless_configured(api: TestClient, tokens: Tokens) -> None:
    response = api.get(
        "/api/v1/strategies", headers={**tokens.headers("read"), "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in response.headers
    preflight = api.options(
        "/api/v1/strategies",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
