"""Dashboards in Chromium, as a person uses them: open a starter dashboard, change the period
for every chart, build a dashboard of their own with a chart, and open its link afresh."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.users import scope_for
from observatory_core.dashboards.store import list_dashboards
from observatory_core.demo.starter_dashboards import install_starter_dashboards
from observatory_core.ui.format import group_value
from tests.e2e.conftest import ARTIFACTS, open_logged_in, settle
from tests.helpers import all_spans
from tests.reference import reference_llm_calls

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


# Each Vega chart as drawn (Vega's SVG): its legend's names, its marks, its axes' labels.
VEGA = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(c => ({
    drawn: !!c.querySelector('svg .role-mark'),
    legend: [...c.querySelectorAll('.role-legend-label text')].map(t => t.textContent),
    lines: c.querySelectorAll('.mark-line path').length,
    rects: c.querySelectorAll('.mark-rect path').length,
    arcs: c.querySelectorAll('.mark-arc path').length,
    areas: c.querySelectorAll('.mark-area path').length,
    texts: [...c.querySelectorAll('.mark-text.role-mark text')].map(t => t.textContent),
    labels: [...c.querySelectorAll('.role-axis-label text')].map(t => t.textContent),
}))"""


def _values(live_server, column: str, since: datetime) -> set[str]:
    """The values of `column` in the e2e admin's org's spans since `since`, from the raw rows,
    and the missing value's group as the charts name it when an LLM call (the charts' subject)
    lacks one: other e2e tests ingest calls with no provider, in an order that varies."""
    engine = live_server["engine"]
    org_id = scope_for(engine, live_server["user"]).org_id
    rows = all_spans(engine)
    df = rows.filter(pl.col("org_id") == org_id, pl.col("start_time") >= since)
    values = set(df[column].drop_nulls().unique())
    calls = df.filter(pl.col("id").is_in(list(reference_llm_calls(rows))))
    if calls[column].null_count():
        values.add(group_value(column, None))
    return values


def test_a_starter_dashboard_its_period_and_a_new_dashboard_shared_by_link(
    live_server, page, browser, ids
):
    open_logged_in(page, live_server, f"/dashboards?d={ids['Latency SLOs']}")
    _ready(page)
    tiles = page.locator('[data-testid="stMetric"]').all_inner_texts()
    # its change against the day before: +, - or ± (a p95 in the same latency bin both days)
    assert any(re.match(r"p95 latency\s+\d[\d,.]* (ms|s|min)\s+[+\-±]", t) for t in tiles), tiles
    charts = page.evaluate(VEGA)  # two lines and two bar charts, drawn by Vega
    assert len(charts) == 4 and all(c["drawn"] for c in charts), charts
    assert page.locator(".js-plotly-plot").count() == 0
    p95, ttft, errors, p99 = charts
    assert p95["lines"] >= 2 and errors["rects"] >= 24 and p99["rects"] >= 2
    # the lines' legends name the providers of the day's calls (the top 5 and "(other)")
    providers = _values(live_server, "provider", datetime.now(UTC) - timedelta(hours=24))
    for chart in (p95, ttft, errors):
        named = set(chart["legend"]) - {"(other)"}
        assert named and named <= providers, (chart["legend"], providers)
    # the p99 by model in seconds, as its tile says a p95
    assert any(label.endswith(" s") for label in p99["labels"]), p99["labels"]
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
    ((line,),) = [page.evaluate(VEGA)]
    # one line (and its dotted cut ends), no groups: no legend
    assert line["drawn"] and line["lines"] >= 1 and not line["legend"]
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
        ((again,),) = [fresh.evaluate(VEGA)]
        assert again["drawn"] and again["lines"] == line["lines"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        fresh.screenshot(path=str(ARTIFACTS / "dashboard-shared.png"), full_page=True)
    finally:
        other.close()
    assert page.get_by_text("Traceback").count() == 0


def test_cost_by_team_draws_its_spend_as_a_stacked_area_and_a_pie(live_server, page, ids):
    open_logged_in(page, live_server, f"/dashboards?d={ids['Cost by team']}")
    _ready(page)
    area, pie = page.evaluate(VEGA)
    assert area["drawn"] and area["areas"] == len(area["legend"]) >= 2  # one band per team
    # a slice per model named in the legend (the top 6 of the week and "(other)")
    models = _values(live_server, "model", datetime.now(UTC) - timedelta(days=7))
    assert pie["arcs"] == len(pie["legend"]) == 7
    assert set(pie["legend"]) - {"(other)"} <= models, (pie["legend"], models)
    # the larger slices say their share; the shares never add up to more than the whole
    shares = [int(t.rstrip("%")) for t in pie["texts"]]
    assert shares and all(t.endswith("%") for t in pie["texts"]) and sum(shares) <= 102
    assert any(label.startswith("$") for label in area["labels"]), area["labels"]
    assert page.get_by_text("Traceback").count() == 0
