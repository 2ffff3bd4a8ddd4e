"""The What changed page and the Overview's contributors through AppTest: the core's numbers,
the link's periods, roles, and what cannot be split said in words."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from observatory_core.accounts.users import scope_for
from observatory_core.filters.spec import FilterSpec
from observatory_core.reports.whatchanged import Periods, link_params, what_changed
from observatory_core.ui import format
from tests.ui.test_metrics_pages import open_page

PAGE = "pages/what_changed.py"


def _periods() -> Periods:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return Periods(
        end - timedelta(hours=48), end - timedelta(hours=24), end - timedelta(hours=24), end
    )


def test_a_link_draws_the_waterfall_and_the_table_of_the_core(app_env):
    engine, _ = app_env
    periods = _periods()
    at = open_page(PAGE, params=link_params("total_cost.sum", "model", periods))
    assert not at.exception, at.exception
    scope = scope_for(engine, "admin-user")
    spec = FilterSpec(relative=None, start=periods.after_start, end=periods.after_end)
    core = what_changed(engine, scope, "total_cost.sum", "model", spec, periods)
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Cost (USD), total, after"] == format.money(core.after)
    assert tiles["Cost (USD), total, before"] == format.money(core.before)
    table = at.dataframe[0].value
    assert table["model"].to_list() == [
        format.group_value("model", c.value) if not c.other else f"(other: {c.groups} values)"
        for c in core.contributions
    ]
    (chart,) = at.get("plotly_chart")
    figure = json.loads(chart.proto.spec)
    (bars,) = figure["data"]
    assert bars["type"] == "waterfall"
    assert bars["y"][0] == core.before and bars["y"][-1] == core.after
    assert sum(bars["y"][1:-1]) == pytest.approx(core.after - core.before)
    assert "Periods from the link" in [c.value for c in at.caption]


def test_a_ratio_shows_mix_and_rate(app_env):
    at = open_page(PAGE, params={"series": "error_rate.avg", "dimension": "environment"})
    assert not at.exception, at.exception
    columns = at.dataframe[0].value.columns
    assert "Mix (traffic moved)" in columns and "Rate (its own figure)" in columns
    assert at.query_params["series"] in ("error_rate.avg", ["error_rate.avg"])
    assert at.query_params["period"] in ("7d", ["7d"])  # the link keeps the period shown


def test_a_percentile_is_refused_in_words(app_env):
    at = open_page(PAGE, params={"series": "duration_ms.p95", "dimension": "model"})
    assert not at.exception, at.exception
    assert any("cannot be split" in w.value for w in at.warning)


def test_viewers_are_offered_no_costs(app_env):
    at = open_page(PAGE, role="viewer", params={"series": "total_cost.sum"})
    assert not at.exception, at.exception
    assert any("costs" in w.value for w in at.warning)
    metric = at.selectbox(key="wc_series")
    assert metric.value == "request_count.count"
    assert not [o for o in metric.options if "Cost" in o]


def test_the_overview_links_each_headline_change_to_its_full_analysis(app_env):
    at = open_page("pages/overview.py", params={"period": "24h"})
    assert not at.exception, at.exception
    links = at.get("page_link")
    assert len(links) == 6  # requests, cost, tokens, latency, error and success rate
    first = links[0].proto
    assert first.page.endswith("what_changed") or "what_changed" in first.page
    at = open_page("pages/overview.py", role="viewer", params={"period": "24h"})
    assert len(at.get("page_link")) == 5  # no cost for viewers
