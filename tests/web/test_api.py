"""The JSON API on the real database and Redis: each resource, its filters and paging."""

from __future__ import annotations

from fastapi.testclient import TestClient

from core.states import OrderState
from db.engine import Database
from db.ownership import claim
from db.strategies import require_strategy
from tests.fixtures.web import Tokens
from tests.web import seed


def test_strategy_priority_change_is_announced_with_who_changed_it(
    api: TestClient, tokens: Tokens
) -> None:
    admin = tokens.headers("admin")
    response = api.patch("/api/v1/strategies/trading",
                         json={"priority": 95, "lock_days": 2, "reason": "promoted",
                               "limits": {"max_order_quantity": "500"}}, headers=admin)  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    # Stored validated (core/strategy_config.py), shown as decimal strings (amounts exact).
    assert (body["priority"], body["lock_days"], body["limits"]) == (
        95, 2, {"max_order_quantity": "500"})  # fmt: skip
    events = api.get("/api/v1/events", params={"types": "strategy_updated"},
                     headers=tokens.headers("read")).json()["items"]  # fmt: skip
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["changes"]["priority"] == [50, 95]
    assert payload["reason"] == "promoted"
    assert payload["by"].startswith("web:admin")
    names = [s["name"] for s in api.get("/api/v1/strategies", headers=admin).json()["items"]]
    assert names[:2] == ["long_term", "trading"]  # by priority now


def test_strategy_create_deactivate_activate(api: TestClient, tokens: Tokens) -> None:
    admin = tokens.headers("admin")
    created = api.post("/api/v1/strategies", json={"name": "momentum", "priority": 40,
                                                   "horizon": "medium"}, headers=admin)  # fmt: skip
    assert created.status_code == 201, created.text
    again = api.post("/api/v1/strategies", json={"name": "momentum", "priority": 40,
                                                 "horizon": "medium"}, headers=admin)  # fmt: skip
    assert again.status_code == 409
    off = api.post("/api/v1/strategies/momentum/deactivate", json={"reason": "paused"},
                   headers=admin)  # fmt: skip
    assert off.status_code == 200 and off.json()["active"] is False
    on = api.post("/api/v1/strategies/momentum/activate", headers=admin)
    assert on.status_code == 200 and on.json()["active"] is True
    types = [e["type"] for e in api.get("/api/v1/events", headers=admin).json()["items"]]
    assert types == ["strategy_activated", "strategy_deactivated", "strategy_updated"]
    assert api.post("/api/v1/strategies/nosuch/activate", headers=admin).status_code == 404


def test_bad_strategy_input_is_422_naming_the_field(api: TestClient, tokens: Tokens) -> None:
    admin = tokens.headers("admin")
    for body in (
        {"priority": -1},
        {"priority": "high"},
        {"lock_days": -3},
        {"limits": {"max_order_quantity": 0}},
        {"limits": {"bogus": 1}},
        {"x": 1},
    ):
        response = api.patch("/api/v1/strategies/trading", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
    # Names match whole: a valid name inside a longer string is not one.
    for bad in ("Trading", "trading!", "x trading"):
        response = api.patch(f"/api/v1/strategies/{bad}", json={"priority": 1}, headers=admin)
        assert response.status_code == 422, (bad, response.text)
    created = api.post("/api/v1/strategies", json={"name": "ok_but-not", "priority": 1},
                       headers=admin)  # fmt: skip
    assert created.status_code == 422, created.text


def test_ownership_map_history_release_and_transfer(
    api: TestClient, tokens: Tokens, db: Database
) -> None:
    order_id = seed.order(db, "trading", "own-1", ticker="TSLA")
    with db.unit_of_work() as uow:
        claim(uow.session, "TSLA", require_strategy(uow.session, "trading"), order_id, "test")
        uow.commit()
    read, admin = tokens.headers("read"), tokens.headers("admin")
    owners = api.get("/api/v1/ownership", headers=read).json()
    assert "server_time" in owners
    assert [(o["ticker"], o["strategy"]) for o in owners["items"]] == [("TSLA", "trading")]
    moved = api.post("/api/v1/ownership/TSLA/transfer", json={"to_strategy": "long_term"},
                     headers=admin)  # fmt: skip
    assert moved.status_code == 200, moved.text
    assert moved.json()["ownership"]["strategy"] == "long_term"
    assert moved.json()["ownership"]["locked"] is True  # long_term locks 90 days
    released = api.post("/api/v1/ownership/tsla/release", json={"reason": "manual"},
                        headers=admin)  # fmt: skip
    assert released.status_code == 200
    history = api.get("/api/v1/ownership/TSLA/history", headers=read).json()
    assert [(h["strategy"], h["how"]) for h in history["items"]] == [
        ("long_term", "released"), ("trading", "transferred")]  # fmt: skip
    assert api.post("/api/v1/ownership/TSLA/release", headers=admin).status_code == 404
    assert api.get("/api/v1/ownership/not a ticker/history", headers=read).status_code == 422


def test_orders_filters_keyset_paging_and_detail(
    api: TestClient, tokens: Tokens, db: Database
) -> None:
    ids = [seed.order(db, "trading", f"o-{i}", ticker="AAPL" if i % 2 else "MSFT")
           for i in range(7)]  # fmt: skip
    rejected = seed.order(db, "dividend", "d-1", ticker="KO", state=OrderState.REJECTED)
    read = tokens.headers("read")
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = api.get("/api/v1/orders", params=params, headers=read).json()
        seen += [o["id"] for o in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted([*ids, rejected], reverse=True)  # newest first, each once
    aapl = api.get("/api/v1/orders", params={"ticker": "aapl"}, headers=read).json()["items"]
    assert {o["ticker"] for o in aapl} == {"AAPL"} and len(aapl) == 3
    only = api.get("/api/v1/orders", params={"state": "rejected", "strategy": "dividend"},
                   headers=read).json()["items"]  # fmt: skip
    assert [o["id"] for o in only] == [rejected]
    detail = api.get(f"/api/v1/orders/{rejected}", headers=read).json()
    assert [(t["from"], t["to"]) for t in detail["transitions"]] == [
        ("IDLE", "SIGNAL_RECEIVED"), ("SIGNAL_RECEIVED", "REJECTED")]  # fmt: skip
    assert [e["type"] for e in detail["events"]] == ["signal_received", "signal_rejected"]
    by_coid = api.get(f"/api/v1/orders/{detail['client_order_id']}", headers=read)
    assert by_coid.json()["id"] == rejected
    assert api.get("/api/v1/orders/999999999999999999999", headers=read).status_code == 404
    for bad in ({"state": "NOPE"}, {"cursor": "garbage!"}, {"limit": 0}, {"since": "yesterday"}):
        assert api.get("/api/v1/orders", params=bad, headers=read).status_code == 422, bad


def test_cancel_answers_404_for_no_order_and_never_a_5xx(api: TestClient, tokens: Tokens,
                                                         db: Database) -> None:  # fmt: skip
    admin = tokens.headers("admin")
    assert api.post("/api/v1/orders/12345/cancel", headers=admin).status_code == 404
    order_id = seed.order(db, "trading", "c-1")
    cancelled = api.post(f"/api/v1/orders/{order_id}/cancel", headers=admin)
    assert cancelled.status_code in (202, 409), cancelled.text


def test_conflicts_filters_and_stats(api: TestClient, tokens: Tokens, db: Database) -> None:
    first = seed.order(db, "trading", "s-1", ticker="NVDA", side="buy")
    second = seed.order(db, "long_term", "s-2", ticker="TSLA")
    seed.conflict(db, first, "NVDA", "trading", "long_term", "blocked", "insufficient priority")
    seed.conflict(db, second, "TSLA", "long_term", "trading", "priority_override", "higher")
    read = tokens.headers("read")
    rows = api.get("/api/v1/conflicts", headers=read).json()["items"]
    assert [r["resolution"] for r in rows] == ["priority_override", "blocked"]
    assert rows[1]["order"]["client_order_id"]
    blocked = api.get("/api/v1/conflicts", params={"resolution": "blocked"}, headers=read)
    assert [r["ticker"] for r in blocked.json()["items"]] == ["NVDA"]
    mine = api.get("/api/v1/conflicts", params={"strategy": "long_term", "ticker": "TSLA"},
                   headers=read).json()["items"]  # fmt: skip
    assert len(mine) == 1
    stats = api.get("/api/v1/conflicts/stats", headers=read).json()
    assert stats["totals"] == {"allowed": 0, "blocked": 1, "priority_override": 1}
    assert {s["strategy"]: s["blocked"] for s in stats["by_strategy"]} == {
        "long_term": 0, "trading": 1}  # fmt: skip
    assert sum(d["blocked"] + d["priority_override"] for d in stats["by_day"]) == 2
    assert api.get("/api/v1/conflicts", params={"resolution": "x"}, headers=read).status_code == 422


def test_review_list_and_resolve(api: TestClient, tokens: Tokens, db: Database) -> None:
    order_id = seed.order(db, "trading", "r-1")
    seed.flag(db, order_id, "brokerage answered garbage")
    read, admin = tokens.headers("read"), tokens.headers("admin")
    items = api.get("/api/v1/review", headers=read).json()["items"]
    assert [(i["order_id"], i["reason"]) for i in items] == [
        (order_id, "brokerage answered garbage")
    ]
    missing_note = api.post(f"/api/v1/review/{items[0]['id']}/resolve", json={"note": " "},
                            headers=admin)  # fmt: skip
    assert missing_note.status_code == 422
    done = api.post(
        f"/api/v1/review/{items[0]['id']}/resolve",
        json={"note": "checked by hand", "state": "CANCELLED"},
        headers=admin,
    )
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "CANCELLED" and done.json()["resolved_at"]
    assert api.get("/api/v1/review", headers=read).json()["items"] == []
    again = api.post(f"/api/v1/review/{items[0]['id']}/resolve", json={"note": "x"},
                     headers=admin)  # fmt: skip
    assert again.status_code == 409


def test_kill_switch_on_and_off(api: TestClient, tokens: Tokens) -> None:
    admin = tokens.headers("admin")
    assert api.get("/api/v1/kill-switch", headers=admin).json()["on"] is False
    on = api.post("/api/v1/kill-switch/on", json={"reason": "drill"}, headers=admin).json()
    assert on["on"] is True and on["reason"] == "drill" and on["by"].startswith("web:")
    assert api.post("/api/v1/kill-switch/off", headers=admin).json()["on"] is False
    types = [e["type"] for e in api.get("/api/v1/events", headers=admin).json()["items"]]
    assert types == ["kill_switch_deactivated", "kill_switch_activated"]


def test_positions_with_realised_pnl_totals(api: TestClient, tokens: Tokens) -> None:
    body = api.get("/api/v1/positions", headers=tokens.headers("read")).json()
    assert body == {"items": [], "totals": [], "realized_pnl": "0"}
    missing = api.get("/api/v1/positions", params={"strategy": "nosuch"},
                      headers=tokens.headers("read"))  # fmt: skip
    assert missing.status_code == 404


def test_events_history_filters_and_paging(api: TestClient, tokens: Tokens, db: Database) -> None:
    for i in range(4):
        seed.order(db, "trading", f"e-{i}", ticker="AMD")
    read = tokens.headers("read")
    first = api.get("/api/v1/events", params={"limit": 3, "ticker": "AMD"}, headers=read).json()
    rest = api.get("/api/v1/events", params={"limit": 3, "ticker": "AMD",
                                             "cursor": first["next_cursor"]},
                   headers=read).json()  # fmt: skip
    seqs = [e["seq"] for e in first["items"] + rest["items"]]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) == 4
    bad = api.get("/api/v1/events", params={"types": "order_filled,nope"}, headers=read)
    assert bad.status_code == 422 and "nope" in bad.json()["detail"]


def test_metrics_need_a_token_and_report_from_postgres(
    api: TestClient, tokens: Tokens, db: Database
) -> None:
    seed.order(db, "trading", "m-1", state=OrderState.REJECTED)
    assert api.get("/metrics").status_code == 401
    text = api.get("/metrics", headers=tokens.headers("read")).text
    assert 'arbiter_orders{state="REJECTED"} 1.0' in text
    assert 'arbiter_signals_total{outcome="rejected"} 1.0' in text
    assert 'arbiter_up{component="postgres"} 1.0' in text
    for name in (
        "arbiter_conflicts_total",
        "arbiter_review_items_open",
        "arbiter_outbox_backlog",
        "arbiter_event_lag_seconds",
        "arbiter_reconciliation_last_duration_seconds",
        "arbiter_reconciliation_mismatches_total",
        "arbiter_brokerage_errors",
    ):
        assert name in text, name


def test_the_grafana_dashboard_reads_only_metrics_we_serve(api: TestClient, tokens: Tokens) -> None:
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/arbiter.json")
                           .read_text())  # fmt: skip
    text = api.get("/metrics", headers=tokens.headers("read")).text
    served = set(re.findall(r"^(?:# HELP )?(arbiter_\w+)", text, re.M))
    wanted = {name for panel in dashboard["panels"] for target in panel["targets"]
              for name in re.findall(r"arbiter_\w+", target["expr"])}  # fmt: skip
    assert len(dashboard["panels"]) >= 10
    assert wanted <= served, wanted - served
