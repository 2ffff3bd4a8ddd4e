"""The real server, started as `make run` starts it, and Debian's Chromium to drive it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from observatory_core.accounts.users import add_user
from observatory_core.base.settings import get_settings
from observatory_core.demo.load import load_demo
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.live_server import running_server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    url = f"sqlite:///{tmp / 'e2e.db'}"
    engine = get_engine(url)
    upgrade(engine)
    load_demo(engine, spans=5000, days=3, seed=33, end=datetime.now(UTC) - timedelta(minutes=1))
    password = add_user(engine, "acme", "e2e-admin", "admin")
    add_user(engine, "globex", "e2e-stranger", "admin")
    with running_server(url, tmp) as base:
        yield {"base": base, "engine": engine, "user": "e2e-admin", "password": password}


def open_logged_in(page, live_server, path, *, fresh: bool = False):
    """Open `path` logged in as the e2e admin. The session's first call logs in on the start
    page (deep links through the login form are covered by the Traces test) and keeps the
    login cookie; later calls give it to their own new browser context instead of logging in
    again. `fresh`: a login of its own, for a test that ends its session."""
    base = live_server["base"]
    if fresh or "cookies" not in live_server:
        page.goto(base + "/")
        page.get_by_role("textbox", name="Username").fill(live_server["user"])
        page.get_by_role("textbox", name="Password").fill(live_server["password"])
        page.get_by_role("button", name="Login").click()
        page.get_by_text("Last 24 hours").first.wait_for(timeout=30_000)
        # the login cookie is written by the browser on the run after the login
        for _ in range(100):
            if _login_cookies(page):
                break
            page.wait_for_timeout(100)
        if not fresh and _login_cookies(page):
            live_server["cookies"] = _login_cookies(page)
    else:
        page.context.add_cookies(live_server["cookies"])
    page.goto(base + path)


IDLE = """() => !document.querySelector(
    '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"],'
    + '[data-testid="stSkeleton"], [data-testid="stSpinner"], [data-stale="true"]')"""


def settle(page, timeout: int = 30_000) -> None:
    """Wait until the script's run is over and nothing stale is left on the page: a slow
    machine can show the last run's elements beside the new ones, or replace a chart just
    after a test found it."""
    page.wait_for_function(IDLE, timeout=timeout)
    page.wait_for_timeout(300)
    page.wait_for_function(IDLE, timeout=timeout)


def _login_cookies(page) -> list[dict]:
    return [c for c in page.context.cookies() if c["name"] == get_settings().cookie_name]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is missing: `apt-get install -y chromium` (make test does it)."
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep a screenshot of the browser when a test fails, under tests/artifacts/failures/."""
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get("page") if report.when == "call" and report.failed else None
    if page is not None:
        folder = ARTIFACTS / "failures"
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{item.name}.png"), full_page=True)
