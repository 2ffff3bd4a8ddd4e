"""Alerts in Chromium: a rule fires after spans arrive, and the open page shows it without a
reload (the page refreshes itself; the server's own worker evaluates)."""

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from observatory_core.accounts.users import scope_for
from observatory_core.alerts.rules import build_rule, create_rule
from observatory_core.filters.spec import FilterSpec
from tests.e2e.conftest import ARTIFACTS, open_logged_in, settle
from tests.helpers import span, write

pytestmark = pytest.mark.browser


def test_a_rule_fires_on_the_open_page_after_spans_arrive(live_server, page):
    engine = live_server["engine"]
    scope = scope_for(engine, live_server["user"])
    rule = build_rule(
        name="burst model errors",
        series="error_count.count",
        comparator=">",
        threshold=2,
        window_s=300,
        filters=FilterSpec(models=("burst-model",)),
    )
    create_rule(engine, scope, rule)
    open_logged_in(page, live_server, "/alerts")
    heading = page.get_by_text("Firing now")
    try:
        heading.wait_for(timeout=30_000)
    except PlaywrightTimeout:  # a busy machine's first session after start-up: open it again
        page.goto(live_server["base"] + "/alerts")
        heading.wait_for(timeout=60_000)
    page.wait_for_timeout(6_000)  # at least one evaluation and one refresh with nothing to show
    assert page.locator('[data-testid="stMetric"]').first.inner_text().split() == ["Firing", "0"]
    url_before = page.url

    # Milliseconds before now, not seconds: spans dated back into the previous minute would
    # change a Home summary that another page already cached for this minute (30 s), and the
    # Home browser test, which runs next on the same server, would read the stale numbers.
    now = datetime.now(UTC)
    project = min(scope.project_ids or {1})
    write(
        engine,
        [
            span(
                scope.org_id,
                project,
                now - timedelta(milliseconds=5 - i),
                model="burst-model",
                status="error",
            )
            for i in range(5)
        ],
    )

    toast = page.locator('[data-testid="stToast"]').filter(has_text="burst model errors")
    toast.first.wait_for(timeout=45_000)
    assert "is firing" in toast.first.inner_text()
    tile = page.locator('[data-testid="stMetric"]').first
    assert tile.inner_text().split() == ["Firing", "1"]
    assert page.url == url_before  # no reload, no navigation
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "alert-firing.png"), full_page=True)


def test_a_person_makes_an_unusual_for_this_hour_rule_and_sees_its_backtest(live_server, page):
    open_logged_in(page, live_server, "/alerts")
    page.get_by_role("tab", name="Rules").click()
    page.get_by_text("Unusual for this hour").click()
    settle(page)
    assert page.get_by_role("textbox", name="Threshold").count() == 0  # no number to pick
    page.get_by_role("textbox", name="Name").fill("unusual p95 latency")
    page.get_by_role("button", name="Backtest (last 7 days)").click()
    summary = page.locator('[data-testid="stMarkdown"]').filter(has_text="Would have fired")
    summary.first.wait_for(timeout=30_000)
    assert "in 7 days" in summary.first.inner_text()
    # three days of demo data: no week back to compare with, and the page says so
    page.get_by_text("of the buckets had a baseline").wait_for(timeout=30_000)
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Save rule").click()
    page.get_by_text("Rule 'unusual p95 latency' saved").wait_for(timeout=30_000)
    settle(page)
    # the rule list names its condition in words
    page.get_by_text(
        "unusual p95 latency · duration_ms.p95 above usual, 3 deviations, 4 weeks over 60 min"
    ).wait_for(timeout=30_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "anomaly-rule.png"), full_page=True)
