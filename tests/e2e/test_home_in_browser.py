"""A person logs in through Chromium and reads the home page numbers."""

import re
from datetime import UTC, datetime

import pytest

from observatory_core.accounts.users import scope_for
from observatory_core.reports.summary import home_summary
from observatory_core.ui import format
from tests.e2e.conftest import ARTIFACTS, settle

pytestmark = pytest.mark.browser


def _login(page, base, user, password):
    page.goto(base + "/")
    page.get_by_role("textbox", name="Username").fill(user)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Login").click()


def test_login_and_home_numbers(live_server, page):
    _login(page, live_server["base"], live_server["user"], live_server["password"])
    page.get_by_text("Last 24 hours").first.wait_for(timeout=30_000)
    page.locator('[data-testid="stMetric"]').nth(4).wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    settle(page)
    tiles = {}
    for text in page.locator('[data-testid="stMetric"]').all_inner_texts():
        label, value, *_ = [part for part in text.split("\n") if part.strip()]
        tiles[label] = value
    caption = page.get_by_text(re.compile(r"UTC\. Changes compare")).inner_text()
    end = re.search(r"to (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", caption).group(1)
    now = datetime.strptime(end, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    engine = live_server["engine"]
    expected = home_summary(engine, scope_for(engine, live_server["user"]), now=now).current
    assert expected.requests > 100
    assert tiles == {
        "Requests": format.count(expected.requests),
        "Cost": format.money(expected.cost_usd),
        "Traces": format.count(expected.traces),
        "Error rate": format.rate(expected.error_rate),
        "p95 latency": format.duration_ms(expected.p95_ms),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)


def test_wrong_password_shows_the_message_in_the_browser(live_server, page):
    _login(page, live_server["base"], live_server["user"], "wrong-password-123")
    page.get_by_text("Wrong username or password").wait_for(timeout=30_000)
    assert page.locator('[data-testid="stMetric"]').count() == 0
    assert page.get_by_text("Traceback").count() == 0
