"""The event stream on a real uvicorn server: live delivery, cookie auth, and resuming from
Last-Event-ID with every missed event once, in order."""

from __future__ import annotations

import httpx

from db.engine import Database
from tests.fixtures.web import Tokens, WebServer
from tests.web import seed
from tests.web.sse_client import take

STREAM = "/api/v1/events/stream"


def test_stream_needs_auth_and_takes_no_token_in_the_url(web_server: WebServer,
                                                        tokens: Tokens) -> None:  # fmt: skip
    assert httpx.get(web_server.url + STREAM).status_code == 401
    assert httpx.get(web_server.url + STREAM, params={"token": tokens.read}).status_code == 401


def test_cookie_signed_in_browser_gets_live_events_in_order(
    web_server: WebServer, tokens: Tokens
) -> None:
    browser = httpx.Client(base_url=web_server.url, timeout=20)
    signed_in = browser.post("/login", data={"token": tokens.admin},
                             headers={"Accept": "application/json"})  # fmt: skip
    csrf = signed_in.json()["csrf_token"]
    with browser.stream("GET", STREAM) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for priority in (51, 52, 53):
            changed = browser.patch("/api/v1/strategies/trading", json={"priority": priority},
                                    headers={"X-CSRF-Token": csrf})  # fmt: skip
            assert changed.status_code == 200
        events = take(response, 3)
    assert [e.data["payload"]["changes"]["priority"][1] for e in events] == [51, 52, 53]
    assert all(e.id == e.data["id"] for e in events)
    browser.close()


def test_reconnect_with_last_event_id_gets_every_missed_event_once_in_order(
    web_server: WebServer, tokens: Tokens, db: Database
) -> None:
    headers = tokens.headers("read")
    api = httpx.Client(base_url=web_server.url, timeout=20, headers=tokens.headers("admin"))
    with httpx.stream("GET", web_server.url + STREAM, headers=headers, timeout=20) as response:
        api.post("/api/v1/kill-switch/on", json={"reason": "first"})
        (first,) = take(response, 1)
    # Disconnected: these happen meanwhile (written straight to the history, never published).
    for i in range(5):
        seed.order(db, "trading", f"missed-{i}")
    missed = api.get("/api/v1/events", params={"limit": 100}).json()["items"][::-1]
    missed_ids = [e["id"] for e in missed if e["id"] != first.id]
    assert len(missed_ids) == 5
    resumed = {**headers, "Last-Event-ID": str(first.id)}
    with httpx.stream("GET", web_server.url + STREAM, headers=resumed, timeout=20) as response:
        caught_up = take(response, 5)
        api.post("/api/v1/kill-switch/off", json={"reason": "live again"})
        (live,) = take(response, 1)
    assert [e.id for e in caught_up] == missed_ids
    assert live.data["type"] == "kill_switch_deactivated"
    api.close()


def test_types_filter_and_bad_last_event_id(web_server: WebServer, tokens: Tokens) -> None:
    headers = tokens.headers("read")
    bad = httpx.get(web_server.url + STREAM, headers={**headers, "Last-Event-ID": "nope"})
    assert bad.status_code == 422
    unknown_type = httpx.get(web_server.url + STREAM, params={"types": "nope"}, headers=headers)
    assert unknown_type.status_code == 422
    api = httpx.Client(base_url=web_server.url, timeout=20, headers=tokens.headers("admin"))
    with httpx.stream("GET", web_server.url + STREAM, params={"types": "kill_switch_deactivated"},
                      headers=headers, timeout=20) as response:  # fmt: skip
        api.post("/api/v1/kill-switch/on")
        api.post("/api/v1/kill-switch/off")
        (only,) = take(response, 1)
    assert only.data["type"] == "kill_switch_deactivated"
    api.close()
