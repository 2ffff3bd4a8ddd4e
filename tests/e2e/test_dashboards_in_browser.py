"""Dashboards in Chromium, as a person uses them: open a starter dashboard, change the period
for every chart, build a dashboard of their own with a chart, and open its link afresh."""

from __future__ import annotations

import re

import pytest

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.users import scope_for
from observatory_core.dashboards.store import list_dashboards
from observatory_core.demo.starter_dashboards import install_starter_dashboards
from tests.e2e.conftest import ARTIFACTS, open_logged_in, settle

pytestmark = pytest.mark.browser


@pytest.fixture
def ids(live_server) -> dict[str, int]:
    engine = live_server["engine"]
    install_starter_dashboards(engine)
    scope: Scope = scope_for(engine, live_server["user"])
    return {d["name"]: d["id"] for d in list_dashboards(engine, scope)}


def _ready(page) -> None:
    page.get_by_text(re.compile(r"\d+ charts? · computed in")).first.wait_for(timeout=30_000)
    settle(page)


def test_a_starter_dashboard_its_period_and_a_new_dashboard_shared_by_link(
    live_server, page, browser, ids
):
    open_logged_in(page, live_server, f"/dashboards?d={ids['Latency SLOs']}")
    _ready(page)
    tiles = page.locator('[data-testid="stMetric"]').all_inner_texts()
    # its change against the day before: +, - or ± (a p95 in the same latency bin both days)
    assert any(re.match(r"p95 latency\s+\d[\d,.]* (ms|s|min)\s+[+\-±]", t) for t in tiles), tiles
    assert page.locator(".js-plotly-plot").count() == 4  # two lines and two bar charts
    # each chart opens its query on the Metrics page
    links = page.locator('a[href*="/metrics?"][href*="m="]')
    assert links.count() == 6 and "g=provider" in links.nth(2).get_attribute("href")
    assert "relative=24h" in page.url or "relative" not in page.url  # its own period: 24 hours
    # the period in the sidebar applies to every chart, and the link keeps it
    page.get_by_label("Time", exact=True).click()
    page.get_by_role("option", name=re.compile("7 days")).click()
    page.wait_for_url(re.compile(r"relative=7d"), timeout=30_000)
    _ready(page)
    assert page.get_by_text(re.compile(r"Last 7 days · applies to every chart")).count() == 1
    # a dashboard of one's own: New, name it, add a chart, save
    page.get_by_role("button", name="New").click()
    page.get_by_role("button", name="Add chart").wait_for(timeout=30_000)
    settle(page)
    name = page.get_by_label("Name", exact=True)
    name.fill("My requests")
    name.press("Tab")
    page.get_by_label("Title").fill("Requests per hour")
    page.get_by_label("Title").press("Tab")
    settle(page)
    page.get_by_role("button", name="Add chart").click()
    page.get_by_text("Line of Requests").wait_for(timeout=30_000)  # listed, not yet saved
    settle(page)
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(lambda url: "edit=" not in url, timeout=30_000)
    _ready(page)
    assert page.get_by_text("Requests per hour").count() >= 1
    assert page.locator(".js-plotly-plot").count() == 1
    link = page.url
    assert re.search(r"[?&]d=\d+", link)
    # the link, opened in a new window, is the same dashboard with the same filters
    other = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        fresh = other.new_page()
        other.add_cookies(live_server["cookies"])
        fresh.goto(link)
        _ready(fresh)
        assert fresh.get_by_text("Requests per hour").count() >= 1
        assert fresh.locator(".js-plotly-plot").count() == 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        fresh.screenshot(path=str(ARTIFACTS / "dashboard-shared.png"), full_page=True)
    finally:
        other.close()
    assert page.get_by_text("Traceback").count() == 0
