"""Tokens, sign-in, sessions and CSRF on the real database and Redis."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.fixtures.web import Tokens


def test_healthz_answers_without_auth_and_reports_services(api: TestClient) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "postgres": "ok", "redis": "ok"}


def test_no_token_is_401_with_a_bearer_challenge(api: TestClient) -> None:
    response = api.get("/api/v1/strategies")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_token_is_401(api: TestClient) -> None:
    response = api.get("/api/v1/strategies", headers={"Authorization": "Bearer arb_nope"})
    assert response.status_code == 401


def test_read_token_reads_but_cannot_change(api: TestClient, tokens: Tokens) -> None:
    assert api.get("/api/v1/strategies", headers=tokens.headers("read")).status_code == 200
    response = api.patch("/api/v1/strategies/trading", json={"priority": 60},
                         headers=tokens.headers("read"))  # fmt: skip
    assert response.status_code == 403


def test_revoked_token_stops_working(
    api: TestClient, make_token: Callable[..., str], db: object
) -> None:
    from db.engine import Database
    from db.tokens import revoke_token

    token = make_token("read", name="short-lived")
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/strategies", headers=headers).status_code == 200
    assert isinstance(db, Database)
    with db.unit_of_work() as uow:
        revoke_token(uow.session, "short-lived")
        uow.commit()
    assert api.get("/api/v1/strategies", headers=headers).status_code == 401


def sign_in(api: TestClient, token: str) -> str:
    response = api.post("/login", data={"token": token}, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    return str(response.json()["csrf_token"])


def test_session_cookie_is_httponly_and_samesite_strict(api: TestClient, tokens: Tokens) -> None:
    response = api.post("/login", data={"token": tokens.admin}, follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "arbiter_session=" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/" in cookie
    assert tokens.admin.lower() not in cookie  # the cookie is a session id, not the token


def test_cookie_change_without_csrf_is_403_and_with_it_succeeds(
    api: TestClient, tokens: Tokens
) -> None:
    csrf = sign_in(api, tokens.admin)
    assert api.get("/api/v1/strategies").status_code == 200  # reads need no CSRF
    form = {"priority": "55"}
    assert api.patch("/api/v1/strategies/trading", json={"priority": 55}).status_code == 403
    assert api.post("/logout", data=form).status_code == 403
    response = api.patch("/api/v1/strategies/trading", json={"priority": 55},
                         headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert response.status_code == 200
    assert response.json()["priority"] == 55


def test_logout_needs_csrf_and_ends_the_session(api: TestClient, tokens: Tokens) -> None:
    csrf = sign_in(api, tokens.read)
    response = api.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    api.cookies.clear()
    assert api.get("/api/v1/strategies").status_code == 401


def test_five_bad_sign_ins_in_a_row_answer_429(api: TestClient, tokens: Tokens) -> None:
    codes = [api.post("/login", data={"token": f"arb_wrong{i}"}).status_code for i in range(5)]
    assert codes == [401, 401, 401, 401, 429]
    blocked = api.post("/login", data={"token": tokens.read})  # even a good one, for a while
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
