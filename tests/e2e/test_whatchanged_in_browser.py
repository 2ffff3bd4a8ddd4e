"""What changed in Chromium: from the Overview's headline change to its waterfall."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS, open_logged_in

pytestmark = pytest.mark.browser


def test_a_manager_opens_the_full_analysis_from_the_overview(live_server, page):
    open_logged_in(page, live_server, "/overview?period=7d")
    page.get_by_text("What drove each change (by model)").first.wait_for(timeout=60_000)
    links = page.get_by_role("link", name="Full analysis")
    # requests, cost, tokens, latency, error and success rate; waited for, not counted once:
    # the later tiles' links can still be on their way when the first appears
    expect(links).to_have_count(6, timeout=60_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "overview-what-drove.png"), full_page=True)
    page.locator('a[href*="series=total_cost.sum"]').click()  # the cost's
    page.wait_for_url(re.compile(r"/what_changed\?"), timeout=30_000)
    assert "series=total_cost.sum" in page.url and "before_start=" in page.url
    page.get_by_text("Periods from the link").first.wait_for(timeout=30_000)
    # the waterfall: before, each model's part, after
    ticks = page.locator(".js-plotly-plot .xtick text")
    ticks.filter(has_text="Before").first.wait_for(timeout=30_000)
    ticks.filter(has_text="After").first.wait_for(timeout=30_000)
    assert page.locator(".js-plotly-plot .waterfalllayer, .js-plotly-plot .barlayer").count() >= 1
    page.get_by_text("Download this table (CSV)").first.wait_for(timeout=30_000)
    assert page.get_by_text("Traceback").count() == 0
    page.screenshot(path=str(ARTIFACTS / "what-changed.png"), full_page=True)
