"""Browser fixtures: the web app served by uvicorn in a real process (killable, to drop the
event stream), headless Debian Chromium driven by selenium, and a signed-in admin.

Chromium and chromedriver come from Debian's `chromium` and `chromium-driver` packages;
selenium is pointed at both, so selenium-manager never tries to download a browser. The tests
skip, saying why, only when those binaries are absent.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from db.engine import Database
from db.tokens import create_token
from tests.fixtures.simulator import REPO_ROOT, free_port

CHROMIUM = os.environ.get("ARBITER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ARBITER_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
DESKTOP = (1360, 900)
PHONE = (375, 800)


class WebServer:
    """`uvicorn web.app:create_app --factory` on a fixed port; restartable on that port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> WebServer:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "web.app:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited:\n{self.log()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code in (200, 503):
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"uvicorn did not answer:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: every open connection (the event stream) drops at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests_to(self, method: str, path_part: str) -> int:
        """How many `METHOD path` requests reached the server (from its access log)."""
        return sum(1 for line in self.log().splitlines()
                   if f'"{method} ' in line and path_part in line)  # fmt: skip


@pytest.fixture(scope="session")
def chrome_binaries() -> tuple[str, str]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(p))]
    if missing:
        pytest.skip(f"browser tests need Debian's chromium and chromium-driver "
                    f"({', '.join(missing)} not found): apt-get install -y chromium "
                    "chromium-driver")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def admin_token(db: Database) -> str:
    """A fresh admin token (after `db` emptied the tables for this test)."""
    with db.unit_of_work() as uow:
        token = create_token(uow.session, "browser-admin", "admin").token
        uow.commit()
    return token


@pytest.fixture
def web(arbiter_env: dict[str, str], tmp_path: Path, db: Database) -> Iterator[WebServer]:
    server = WebServer(arbiter_env, tmp_path / "web.log").start()
    yield server
    server.stop()


@pytest.fixture
def stack(start_worker: Callable[..., Any], start_beat: Callable[..., Any], web: WebServer
          ) -> WebServer:  # fmt: skip
    """Worker, beat, simulator (through arbiter_env) and the web app, all real processes."""
    start_worker()
    start_beat()
    return web


@pytest.fixture
def browser(chrome_binaries: tuple[str, str]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chrome_binaries
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def phone(driver: Any, width: int = PHONE[0], height: int = PHONE[1]) -> None:
    """A phone-sized viewport. Headless Chromium keeps windows at least 500 px wide, so the
    width is set by device emulation (as DevTools' device toolbar does), not window size."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})  # fmt: skip


def screenshot(driver: Any, name: str, full_page: bool = True) -> Path:
    """Save docs/screenshots/NAME.png: the whole page at the current width (through the
    DevTools protocol, which captures beyond the viewport), or just what is on screen."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if not full_page:
        driver.save_screenshot(str(path))
        return path
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 5000),
                 "scale": 1},
    })  # fmt: skip
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
