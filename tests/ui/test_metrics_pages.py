"""The Metrics and Overview pages through AppTest: numbers equal the core's, links, roles."""

from datetime import datetime, timedelta

import polars as pl
from streamlit.testing.v1 import AppTest

from observatory_core.accounts.users import scope_for
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.reports.overview import period_overview
from observatory_core.ui import cached
from tests.helpers import all_spans
from tests.ui.test_app import login, start


def open_page(path: str, role="admin", params=None) -> AppTest:
    at = login(start(), f"{role}-user")
    at.switch_page(path)
    for key, value in (params or {}).items():
        at.query_params[key] = value
    return at.run(timeout=60)


def test_metrics_link_draws_the_chart_and_the_table_of_the_core(app_env):
    engine, _ = app_env
    at = open_page(
        "pages/metrics.py",
        params={
            "relative": "7d",
            "m": "request_count.count,total_cost.sum",
            "b": "1day",
            "g": "model",
        },
    )
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    scope = scope_for(engine, "admin-user")
    core = run_metrics(
        engine,
        scope,
        MetricQuery(
            series=("request_count.count", "total_cost.sum"),
            filters=FilterSpec(relative="7d"),
            bucket="1day",
            group_by=("model",),
        ),
        max_groups=10,
    ).frame
    assert len(table) == core.height > 0
    # ten models and "(other)": the lines add up to every span of the range
    assert table["model"].nunique() == core["model"].n_unique() <= 11
    everything = run_metrics(
        engine,
        scope,
        MetricQuery(series=("request_count.count",), filters=FilterSpec(relative="7d")),
    ).frame
    assert int(table["Requests"].sum()) == int(everything["request_count.count"].sum())
    assert any("rollups" in c.value for c in at.caption)
    assert [m.value for m in at.multiselect if m.label == "Group by"] == [["model"]]


def test_zoom_link_narrows_the_range_and_offers_a_reset(app_env):
    at = open_page(
        "pages/metrics.py",
        params={"relative": "7d", "zoom": "2026-11-01T00:00:00+00:00~2026-11-01T06:00:00+00:00"},
    )
    assert not at.exception, at.exception
    assert any(b.label == "Reset zoom" for b in at.button)
    assert any("Zoomed in" in c.value for c in at.caption)


def test_bad_metric_choice_is_explained(app_env):
    at = open_page(
        "pages/metrics.py", params={"relative": "7d", "b": "1min", "m": "request_count.count"}
    )
    assert not at.exception
    text = " ".join(e.value for e in at.error)
    assert "1min bucket charts at most 1 day" in text


def test_viewer_cannot_pick_cost_metrics(app_env):
    at = open_page("pages/metrics.py", role="viewer", params={"relative": "7d"})
    assert not at.exception
    options = next(m for m in at.multiselect if m.label == "Metrics").options
    assert options and not any("Cost" in o for o in options)


def test_overview_tiles_equal_the_core(app_env):
    engine, _ = app_env
    # The page computes as of the current minute; so does the reference (the same minute,
    # else a span right at the window's start can be in one count and not the other).
    for _ in range(3):
        minute = cached.minute()
        at = open_page("pages/overview.py", params={"period": "24h"})
        if cached.minute() == minute:
            break
    assert not at.exception, at.exception
    scope = scope_for(engine, "admin-user")
    now = datetime.fromisoformat(minute)
    view = period_overview(engine, scope, FilterSpec(relative="24h"), now=now)
    tiles = {m.label: m.value for m in at.metric}
    expected = {k.label: k.current for k in view.kpis}
    assert tiles["Requests"].replace(",", "") == str(expected["Requests"])
    # Traces beside Requests: the traces begun in the period, polars over the raw rows
    assert [m.label for m in at.metric][:2] == ["Requests", "Traces"]
    df = all_spans(engine).filter(pl.col("org_id") == scope.org_id)
    firsts = df.group_by("trace_id").agg(pl.col("start_time").min())
    begun = firsts.filter(
        (pl.col("start_time") >= now - timedelta(hours=24)) & (pl.col("start_time") < now)
    )
    assert begun.height > 100
    assert tiles["Traces"].replace(",", "") == str(begun.height)
    assert "Cost (USD)" in tiles and "Unique users" in tiles
    assert any(
        "beyond noise" in (m.delta or "") or "within noise" in (m.delta or "") for m in at.metric
    )
    assert len(at.tabs) >= 3
    # "Most common errors" counts failed spans of any kind, and says so
    assert any("Failed spans of every kind" in c.value for c in at.caption)


def test_billing_sees_costs_and_budget_viewer_does_not(app_env):
    at = open_page("pages/overview.py", role="billing")
    assert not at.exception, at.exception
    assert any(h.value == "Budget this month" for h in at.subheader)
    at = open_page("pages/overview.py", role="viewer")
    assert not at.exception, at.exception
    assert not any(h.value == "Budget this month" for h in at.subheader)
    assert "Cost (USD)" not in {m.label for m in at.metric}
    assert pl is not None


def test_a_query_past_its_budget_shows_how_to_narrow_it(app_env, monkeypatch):
    """The page stops the query at the read budget and says so, instead of spinning."""
    from sqlalchemy import text

    from observatory_core.base.settings import get_settings
    from observatory_core.ui.session import engine as ui_engine
    from tests.helpers import SLOW_SQL

    monkeypatch.setenv("OBSERVATORY_READ_BUDGET_S", "0.5")
    get_settings.cache_clear()
    slow = SLOW_SQL["sqlite"]

    def stuck(*_args, **_kwargs):
        with ui_engine().connect() as conn:
            conn.execute(text(slow))

    monkeypatch.setattr(cached, "metrics", stuck)
    at = open_page("pages/metrics.py", params={"relative": "7d", "m": "request_count.count"})
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("time budget of 0.5 s" in e and "Narrow it" in e for e in errors), errors


def test_billing_is_offered_no_text_search_viewer_no_cost_range(app_env):
    billing = open_page("pages/metrics.py", role="billing", params={"relative": "7d"})
    assert not billing.exception, billing.exception
    assert not any("Search" in t.label for t in billing.sidebar.text_input)
    assert any(n.label == "Cost USD min" for n in billing.sidebar.number_input)
    viewer = open_page("pages/metrics.py", role="viewer", params={"relative": "7d"})
    assert not viewer.exception, viewer.exception
    assert any("Search" in t.label for t in viewer.sidebar.text_input)
    assert not any("Cost" in n.label for n in viewer.sidebar.number_input)


def test_the_subject_picker_sets_the_metrics_offered(app_env):
    """Issue 24: the user picks what the metrics count; the metric list follows the subject,
    and tool calls by tool name are the core's figures."""
    from observatory_core.semantic.metrics import Subject
    from observatory_core.ui.metrics_view import series_label, series_options

    engine, _ = app_env
    scope = scope_for(engine, "admin-user")

    def labels(subject):
        return {series_label(s) for s in series_options(scope, subject)}

    at = open_page("pages/metrics.py", params={"relative": "7d", "b": "1day"})
    assert not at.exception, at.exception
    picker = next(s for s in at.selectbox if s.label == "Count over")
    assert picker.value == Subject.LLM_CALLS
    metrics = next(m for m in at.multiselect if m.label == "Metrics")
    assert set(metrics.options) == labels(Subject.LLM_CALLS)
    assert "Spans" not in metrics.options and "Requests" in metrics.options
    assert metrics.value == ["request_count.count", "duration_ms.p95"]

    picker.set_value(Subject.TOOL_CALLS).run(timeout=60)
    assert not at.exception, at.exception
    metrics = next(m for m in at.multiselect if m.label == "Metrics")
    assert set(metrics.options) == labels(Subject.TOOL_CALLS)
    assert {"Tool calls", "Tool calls: error rate"} <= set(metrics.options)
    assert metrics.value == ["tool_call_count.count"]
    assert at.query_params["s"] in ("tool_calls", ["tool_calls"])
    next(m for m in at.multiselect if m.label == "Group by").set_value(["name"]).run(timeout=60)
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    core = run_metrics(
        engine,
        scope,
        MetricQuery(
            series=("tool_call_count.count",),
            filters=FilterSpec(relative="7d"),
            bucket="1day",
            group_by=("name",),
        ),
        max_groups=10,
    ).frame
    assert len(table) == core.height > 0
    assert int(table["Tool calls"].sum()) == int(core["tool_call_count.count"].sum())
    assert set(table["name"]) == set(core["name"].to_list())


def test_a_link_to_a_metric_opens_its_subject(app_env):
    at = open_page("pages/metrics.py", params={"relative": "7d", "m": "agent_run_count.count"})
    assert not at.exception, at.exception
    assert next(s for s in at.selectbox if s.label == "Count over").value == "agent_runs"
    assert [m.value for m in at.multiselect if m.label == "Metrics"] == [["agent_run_count.count"]]


def test_metrics_group_by_a_tag_key_from_the_link(app_env):
    """Issue 19: "tag:customer" in the link groups the chart and the table by that key."""
    at = open_page(
        "pages/metrics.py",
        params={"relative": "7d", "m": "request_count.count", "b": "1day", "g": "tag:customer"},
    )
    assert not at.exception, at.exception
    assert [m.value for m in at.multiselect if m.label == "Group by"] == [["tag:customer"]]
    assert "northwind" in set(at.dataframe[0].value["tag:customer"].dropna())


def test_a_bad_key_in_the_link_says_what_to_send(app_env):
    at = open_page("pages/metrics.py", params={"relative": "7d", "g": "tag:bad key"})
    assert not at.exception, at.exception
    assert [m.value for m in at.multiselect if m.label == "Group by"] == [[]]


def test_cost_attribution_page_adds_up_and_hides_costs_from_viewers(app_env):
    engine, _ = app_env
    at = open_page("pages/attribution.py", params={"key": "tag:customer", "period": "7d"})
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert "(none)" in set(table["value"]) and "northwind" in set(table["value"])
    core = run_metrics(
        engine,
        scope_for(engine, "admin-user"),
        MetricQuery(series=("total_cost.sum",), filters=FilterSpec(relative="7d"), bucket=None),
    ).frame["total_cost.sum"][0]
    assert abs(table["cost"].sum() - core) <= 1e-6 * core
    viewer = open_page("pages/attribution.py", role="viewer", params={"key": "tag:customer"})
    assert not viewer.exception, viewer.exception
    columns = set(viewer.dataframe[0].value.columns)
    assert "requests" in columns and not {c for c in columns if c.startswith("cost")}
    assert not [m for m in viewer.metric if "Cost" in m.label]


def test_a_point_of_a_key_group_opens_the_spans_holding_that_value():
    from observatory_core.ui.metrics_view import point_filter

    zoom = "2026-11-01T00:00:00+00:00~2026-11-01T01:00:00+00:00"
    spec = point_filter(
        FilterSpec(relative="7d"), zoom, {"tag:customer": "acme", "metadata:team": "search"}
    )
    assert spec.tags_all == ("customer:acme",) and spec.metadata == (("team", "search"),)
    assert spec.start == datetime.fromisoformat(zoom.split("~")[0])


def test_overview_ranks_by_any_key(app_env):
    at = open_page("pages/overview.py")
    assert not at.exception, at.exception
    keys = [s for s in at.selectbox if s.label == "Group by"]
    assert keys and keys[0].value == "tag:customer"
    assert len(at.get("plotly_chart")) >= 4  # the three rankings and the key's
