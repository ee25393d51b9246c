"""The dashboard in a real browser: headless Chromium on the web app (uvicorn, a real process)
with a real worker, beat, simulator, Postgres and Redis. Screenshots go to docs/screenshots.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from db.engine import Database
from db.models import ConflictLog, EventRecord, ReviewItem
from db.order_manager import OrderManager
from strategy_client.client import SignalClient
from tests.browser.conftest import WebServer, phone, screenshot
from tests.system.helpers import order_by_coid, wait_terminal

pytestmark = [pytest.mark.system, pytest.mark.browser]


def wait(driver: WebDriver, timeout: float = 30) -> WebDriverWait[WebDriver]:
    # A live region may be swapped between finding a row and reading it: look again.
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,))


def sign_in(driver: WebDriver, web: WebServer, token: str, next_path: str = "/") -> None:
    driver.get(f"{web.url}/login?next={next_path}")
    field = wait(driver).until(ec.element_to_be_clickable((By.ID, "token")))
    field.send_keys(token)
    driver.find_element(By.ID, "signin-submit").click()
    wait(driver).until(lambda d: "/login" not in d.current_url)
    live(driver)


NOTICE = (By.CSS_SELECTOR, ".notice.good")
FEED_ROWS = '[data-testid="event-feed"] tr[data-event-id]'
ORDER_ROWS = '[data-testid="orders-table"] tbody tr'


def live_state(driver: WebDriver) -> str:
    return str(driver.execute_script("return document.body.dataset.liveState"))


def live(driver: WebDriver, timeout: float = 30) -> None:
    wait(driver, timeout).until(lambda d: live_state(d) == "live")


def mark_page(driver: WebDriver) -> None:
    """A marker a reload would wipe: proves later changes arrived without one."""
    driver.execute_script("window.__noReload = 'still here';")


def not_reloaded(driver: WebDriver) -> bool:
    return driver.execute_script("return window.__noReload") == "still here"


def api(web: WebServer, token: str, path: str) -> Any:
    response = httpx.get(f"{web.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"},
                         timeout=10)  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


def conflict_rows(driver: WebDriver, ticker: str) -> list[Any]:
    css = f'[data-testid="conflict-log"] tr[data-ticker="{ticker}"]'
    return driver.find_elements(By.CSS_SELECTOR, css)


def test_sign_in_then_a_conflict_appears_without_reload(
    stack: WebServer, admin_token: str, browser: WebDriver, client: SignalClient, db: Database
) -> None:
    # A wrong token is refused in place, with no token in the URL.
    browser.get(f"{stack.url}/conflicts")
    wait(browser).until(lambda d: "/login" in d.current_url)
    browser.find_element(By.ID, "token").send_keys("arb_not-a-token")
    browser.find_element(By.ID, "signin-submit").click()
    error = wait(browser).until(ec.visibility_of_element_located((By.ID, "signin-error")))
    assert "not accepted" in error.text or "revoked" in error.text
    screenshot(browser, "sign-in", full_page=False)
    assert "arb_" not in browser.current_url

    sign_in(browser, stack, admin_token, "/conflicts")
    assert browser.current_url.endswith("/conflicts")
    cookie = browser.get_cookie("arbiter_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    mark_page(browser)

    owner = client.submit_signal("long_term", "NVDA", "buy", 20, signal_id="lt-nvda")
    wait_terminal(db, [owner])
    blocked = client.submit_signal("trading", "NVDA", "sell", 10, signal_id="tr-nvda-sell")

    row = wait(browser).until(lambda d: conflict_rows(d, "NVDA"))[0]
    assert not_reloaded(browser)
    text = row.text
    assert "trading" in text and "long_term" in text          # both strategies
    assert "50" in text and "100" in text                     # both priorities
    assert "BLOCKED" in text.upper()                          # the decision
    assert "insufficient priority" in text                    # the reasoning
    order = order_by_coid(db, blocked)
    assert order is not None
    assert f"#{order.id}" in text                             # the resulting order
    total = '[data-testid="total-blocked"]'
    wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, total).text == "1")
    screenshot(browser, "conflicts")


def test_raising_a_priority_in_the_ui_decides_the_next_conflict(
    stack: WebServer, admin_token: str, browser: WebDriver, client: SignalClient, db: Database
) -> None:
    owner = client.submit_signal("trading", "TSLA", "buy", 10, signal_id="tr-tsla")
    wait_terminal(db, [owner])
    first = client.submit_signal("aggressive", "TSLA", "buy", 5, signal_id="ag-tsla-1")
    wait_terminal(db, [first])

    sign_in(browser, stack, admin_token, "/strategies")
    field = browser.find_element(By.CSS_SELECTOR, '[data-testid="priority-aggressive"]')
    field.clear()
    field.send_keys("75")
    browser.find_element(By.CSS_SELECTOR, '[data-testid="save-aggressive"]').click()
    notice = wait(browser).until(ec.visibility_of_element_located(NOTICE))
    assert "Priority saved: aggressive" in notice.text
    live(browser)
    screenshot(browser, "strategies")

    browser.get(f"{stack.url}/conflicts")
    live(browser)
    mark_page(browser)
    second = client.submit_signal("aggressive", "TSLA", "buy", 5, signal_id="ag-tsla-2")

    def decided(d: WebDriver) -> list[str] | None:
        rows = [row.text for row in conflict_rows(d, "TSLA")]
        return rows if len(rows) >= 2 else None

    newest, earlier = wait(browser).until(decided)[:2]
    assert not_reloaded(browser)
    assert "PRIORITY OVERRIDE" in newest.upper()
    assert "75" in newest and "50" in newest
    assert "PRIORITY OVERRIDE" not in earlier.upper()
    with db.unit_of_work() as uow:
        log = uow.session.scalar(select(ConflictLog).order_by(ConflictLog.id.desc()))
        assert log is not None and log.resolution == "priority_override"
        assert log.requesting_priority == 75
    order = order_by_coid(db, second)
    assert order is not None and order.conflict_check_passed


def test_resolving_a_review_item_on_a_phone(
    stack: WebServer, admin_token: str, browser: WebDriver, client: SignalClient, db: Database
) -> None:
    coid = client.submit_signal("long_term", "AAPL", "buy", 3, signal_id="lt-aapl-review")
    (order,) = wait_terminal(db, [coid])
    with db.unit_of_work() as uow:
        OrderManager(uow.session).flag_for_review(
            order.id, "brokerage reports 3 filled but a cancel raced it: check the account",
            actor="test")  # fmt: skip
        uow.commit()

    phone(browser)
    sign_in(browser, stack, admin_token, "/review")
    item = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".review-item"))[0]
    item_id = item.get_attribute("data-review-id")
    assert no_sideways_scroll(browser)
    item.find_element(By.NAME, "note").send_keys("checked the brokerage: 3 filled, nothing to do")
    screenshot(browser, "review-phone")
    button = item.find_element(By.CSS_SELECTOR, f'[data-testid="resolve-{item_id}"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    notice = wait(browser).until(ec.visibility_of_element_located(NOTICE))
    assert f"Review item {item_id} resolved" in notice.text
    with db.unit_of_work() as uow:
        row = uow.session.get(ReviewItem, int(item_id or 0))
        assert row is not None and row.resolved_at is not None
        assert row.resolution_note == "checked the brokerage: 3 filled, nothing to do"
    assert not browser.find_elements(By.CSS_SELECTOR, ".review-item")


def no_sideways_scroll(driver: WebDriver) -> bool:
    return bool(driver.execute_script(
        "return window.innerWidth === 375"
        " && document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    )  # fmt: skip


def test_every_page_fits_a_375px_screen(
    stack: WebServer, admin_token: str, browser: WebDriver, client: SignalClient, db: Database
) -> None:
    coids = [client.submit_signal("long_term", "NVDA", "buy", 20, signal_id="lt-nvda"),
             client.submit_signal("trading", "TSLA", "buy", 10, signal_id="tr-tsla")]  # fmt: skip
    wait_terminal(db, coids)
    coids = [client.submit_signal("trading", "NVDA", "sell", 10, signal_id="tr-nvda"),
             client.submit_signal("long_term", "TSLA", "buy", 100, signal_id="lt-tsla")]
    (first, _) = wait_terminal(db, coids)
    phone(browser)
    sign_in(browser, stack, admin_token)
    for path in ("/", "/ownership", "/ownership/NVDA", "/conflicts", "/orders",
                 f"/orders/{first.id}", "/positions", "/review", "/strategies", "/events"):
        browser.get(stack.url + path)
        live(browser)
        assert no_sideways_scroll(browser), f"{path} scrolls sideways at 375 px"
    browser.get(stack.url + "/conflicts")
    live(browser)
    screenshot(browser, "conflicts-phone")

    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    for path, name in (("/", "overview"), ("/ownership", "ownership"),
                       ("/positions", "positions"), (f"/orders/{first.id}", "order-detail")):
        browser.get(stack.url + path)
        live(browser)
        screenshot(browser, name)

    # A browser whose clock runs 40 days fast still counts NVDA's 90-day lock down from ~90.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
        "const RealDate = Date; const skew = 40 * 86400 * 1000;"
        "Date = class extends RealDate { constructor(...a) { a.length ? super(...a) : "
        "super(RealDate.now() + skew); } static now() { return RealDate.now() + skew; } };")})
    browser.get(stack.url + "/ownership")
    live(browser)
    assert browser.execute_script("return new Date().getTime() - performance.timeOrigin") > 3e9
    countdown = browser.find_element(By.CSS_SELECTOR, 'tr[data-ticker="NVDA"] .countdown')
    time.sleep(1.2)  # at least one tick of the page's own timer
    assert countdown.text.startswith("89d"), countdown.text


def test_the_page_catches_up_after_the_stream_drops(
    stack: WebServer, admin_token: str, browser: WebDriver, client: SignalClient, db: Database
) -> None:
    sign_in(browser, stack, admin_token, "/events")
    before = client.submit_signal("long_term", "MSFT", "buy", 5, signal_id="lt-msft-1")
    wait_terminal(db, [before])
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, FEED_ROWS))
    mark_page(browser)

    stack.kill()  # the stream drops; orders go on changing meanwhile
    wait(browser).until(lambda d: live_state(d) in ("reconnecting", "stale"))
    away = [client.submit_signal("long_term", "MSFT", "buy", 1, signal_id=f"lt-msft-away-{i}")
            for i in range(3)]  # fmt: skip
    wait_terminal(db, away)
    wait(browser, 20).until(lambda d: live_state(d) == "stale")
    banner = browser.find_element(By.ID, "live-banner").text
    assert banner.startswith("Stale since")
    screenshot(browser, "stale-banner", full_page=False)

    stack.start()
    live(browser, 60)
    assert not_reloaded(browser)
    with db.unit_of_work() as uow:
        ordered = select(EventRecord.id).order_by(EventRecord.seq)
        wanted = [str(e) for e in uow.session.scalars(ordered)]
    history = api(stack, admin_token, "/events?limit=500")
    api_ids = [item["id"] for item in history["items"]]
    assert set(api_ids) == set(wanted)

    def shown(d: WebDriver) -> list[str] | None:
        rows = d.find_elements(By.CSS_SELECTOR, FEED_ROWS)
        ids = [r.get_attribute("data-event-id") for r in rows]
        return ids if set(ids) >= set(wanted) else None

    ids = wait(browser).until(shown)
    assert len(ids) == len(set(ids)), "an event was shown twice"
    assert list(reversed(ids)) == wanted, "the page's events are not the history, in order"

    # The orders page, opened before another drop, matches the API after it comes back.
    browser.get(stack.url + "/orders")
    live(browser)
    mark_page(browser)
    browser.execute_script("window.arbiterLive.drop()")
    late = client.submit_signal("long_term", "MSFT", "sell", 2, signal_id="lt-msft-late")
    wait_terminal(db, [late])
    browser.execute_script("window.arbiterLive.resume()")
    live(browser)
    expected = [str(o["id"]) for o in api(stack, admin_token, "/orders?limit=50")["items"]]
    wait(browser).until(lambda d: [r.get_attribute("data-order-id") for r in
                                   d.find_elements(By.CSS_SELECTOR, ORDER_ROWS)] == expected)
    assert not_reloaded(browser)
    screenshot(browser, "orders")


def test_a_double_clicked_cancel_is_sent_once(
    stack: WebServer, admin_token: str, browser: WebDriver, client: SignalClient, db: Database,
    simulator: Any,
) -> None:
    simulator.admin.pause_fills()
    coid = client.submit_signal("trading", "AMD", "buy", 7, signal_id="tr-amd",
                                order_type="limit", limit_price="100.00")  # fmt: skip

    def sent() -> Any:
        order = order_by_coid(db, coid)
        return order if order is not None and order.state == "ORDER_SENT" else None

    order = wait(browser, 60).until(lambda _: sent())
    sign_in(browser, stack, admin_token, f"/orders/{order.id}")
    cancel = (By.CSS_SELECTOR, '[data-testid="cancel-order"]')
    button = wait(browser).until(ec.element_to_be_clickable(cancel))
    ActionChains(browser).double_click(button).perform()
    dialog = wait(browser).until(ec.visibility_of_element_located((By.ID, "confirm")))
    assert "Cancel order" in dialog.text, dialog.text
    screenshot(browser, "cancel-confirm", full_page=False)
    ok = dialog.find_element(By.CSS_SELECTOR, ".confirm-ok")
    ActionChains(browser).double_click(ok).perform()
    wait(browser).until(lambda d: d.find_element(By.ID, "toast").is_displayed())
    time.sleep(1.0)  # room for a second request, were the page to send one
    # Another click on the (now disabled) button and Enter send nothing more either.
    browser.execute_script(
        "const b = document.querySelector('[data-testid=cancel-order]'); if (b) b.click();")
    time.sleep(0.5)
    assert stack.requests_to("POST", f"/api/v1/orders/{order.id}/cancel") == 1
    toast = browser.find_element(By.ID, "toast").text
    try:
        import service_layer.cancellation  # noqa: F401  (per-order cancel: the order-control work)
    except ImportError:
        # Not on this branch yet: the API answers 501 and the page says so, once.
        assert "not available" in toast
        return
    wait_terminal(db, [coid])
    at_brokerage = simulator.admin.orders(client_order_id=coid)
    assert len(at_brokerage) == 1 and at_brokerage[0]["status"] in ("canceled", "cancelled")
    with db.unit_of_work() as uow:
        types = list(uow.session.scalars(
            select(EventRecord.type).where(EventRecord.order_id == order.id)))  # fmt: skip
    assert types.count("order_cancel_requested") == 1, types  # one cancel sent to the brokerage
    assert types.count("order_cancelled") == 1, types
