"""The Dashboards page through AppTest, as a person uses it: open a starter dashboard by its
link and read numbers equal to the engine's, create one and add a chart, duplicate, edit as
JSON, import, delete; a viewer sees cost charts as hidden and no editing buttons."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import polars as pl
import pytest
from sqlalchemy import delete

from observatory_core.accounts.users import scope_for
from observatory_core.dashboards.render import total
from observatory_core.dashboards.store import get_dashboard, list_dashboards
from observatory_core.demo.starter_dashboards import install_starter_dashboards
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.storage.schema import dashboards
from observatory_core.ui import format
from tests.ui.test_app import login, start


@pytest.fixture
def boards(app_env):
    """The starter dashboards, and only them, in the shared app database."""
    engine, _ = app_env
    with engine.begin() as conn:
        conn.execute(delete(dashboards))
    install_starter_dashboards(engine)
    scope = scope_for(engine, "admin-user")
    return engine, {d["name"]: d["id"] for d in list_dashboards(engine, scope)}


def open_page(role: str, params: dict | None = None):
    at = login(start(), f"{role}-user")
    at.switch_page("pages/dashboards.py")
    for key, value in (params or {}).items():
        at.query_params[key] = value
    return at.run(timeout=60)


def _button(at, key: str):
    return next(b for b in at.button if b.key == key)


def test_a_starter_dashboard_by_link_shows_the_engines_numbers(boards):
    engine, ids = boards
    # the page reads "the last 24 hours" at the minute (ui.cached): the test at the same one
    for _ in range(3):
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        at = open_page("developer", {"d": str(ids["Cost by team"]), "relative": "24h"})
        if datetime.now(UTC).replace(second=0, microsecond=0) == minute:
            break
    assert not at.exception, at.exception
    assert at.selectbox(key=f"dash_pick_{ids['Cost by team']}").value == ids["Cost by team"]
    scope = scope_for(engine, "developer-user")
    board = get_dashboard(engine, scope, ids["Cost by team"])["dashboard"]
    spend = board.charts[0]
    result = run_metrics(engine, scope, spend.query(FilterSpec(relative="24h")), now=minute)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Spend"] == format.money(total(result))
    assert at.metric[0].delta  # the change against the day before
    # the table chart: one row per team and environment, summing to the spend
    table = at.dataframe[0].value
    assert sum(table["Cost (USD) · sum"]) == pytest.approx(total(result), rel=1e-9)
    assert any("applies to every chart" in c.value for c in at.caption)
    area, pie = charts(at)  # Vega-Lite's, with the rows they draw
    assert area[0]["mark"]["type"] == "area" and pie[0]["layer"][0]["mark"]["type"] == "arc"
    # the pie's slices, one per model and "(other)", add up to the spend
    assert pie[1]["value"].sum() == pytest.approx(total(result), rel=1e-9)
    assert area[1]["value"].sum() == pytest.approx(total(result), rel=1e-9)
    # each chart opens its query on the Metrics page
    links = [m.value for m in at.markdown if "/metrics?" in m.value]
    assert any("m=total_cost.sum" in x and "g=project" in x and "b=1day" in x for x in links)
    metrics = login(start(), "developer-user")
    metrics.switch_page("pages/metrics.py")
    area = next(x for x in links if "g=project" in x)
    for key, value in parse_qsl(area.split("/metrics?")[1].rstrip(")")):
        metrics.query_params[key] = value
    metrics.run(timeout=60)
    assert not metrics.exception and not metrics.error
    assert [m.value for m in metrics.multiselect if m.label == "Group by"] == [["project"]]


def charts(at) -> list[tuple[dict, pl.DataFrame]]:
    """Each Vega-Lite chart on the page: its spec and the rows sent beside it (Arrow)."""
    return [
        (json.loads(c.proto.spec), pl.read_ipc_stream(io.BytesIO(c.proto.data.data)))
        for c in at.get("vega_lite_chart")
    ]


def test_dense_lines_are_drawn_without_a_marker_per_point(boards):
    """Latency SLOs over a day: 5-minute lines of 288 points draw as lines (thousands of
    markers took the browser seconds); sparse lines keep a marker per point."""
    _, ids = boards
    at = open_page("developer", {"d": str(ids["Latency SLOs"]), "relative": "24h"})
    assert not at.exception, at.exception
    drawn = charts(at)
    assert len(drawn) == 4 and not at.get("plotly_chart")
    lines = [(spec, rows) for spec, rows in drawn if "layer" in spec]
    assert len(lines) == 2
    for spec, rows in lines:
        points = rows.filter(pl.col("group") == rows["group"][0]).height
        assert points > 60 and spec["layer"][0]["mark"]["point"] is False, points
        providers = spec["layer"][0]["encoding"]["color"]["scale"]["domain"]
        assert sorted(providers) == sorted(rows["group"].unique())  # the legend's names


def test_a_viewer_sees_cost_charts_hidden_and_no_editing(boards):
    _, ids = boards
    at = open_page("viewer", {"d": str(ids["Cost by team"])})
    assert not at.exception, at.exception
    hidden = [i.value for i in at.info if i.value.startswith("Hidden for your role")]
    assert len(hidden) == 5 and all("costs" in h for h in hidden)
    assert [m.label for m in at.metric] == ["Requests"]
    assert not at.dataframe  # the cost table is not drawn at all
    assert not any(b.key in ("dash_new", "dash_edit", "dash_duplicate") for b in at.button)
    assert any(b.label == "Export JSON" for b in at.get("download_button"))


def test_a_developer_creates_edits_duplicates_and_deletes(boards):
    engine, ids = boards
    scope = scope_for(engine, "developer-user")
    at = open_page("developer", {"d": str(ids["Latency SLOs"])})
    _button(at, "dash_new").click().run()
    assert not at.exception, at.exception
    assert at.query_params["edit"] == "1"
    new_id = int(at.query_params["d"])
    assert get_dashboard(engine, scope, new_id)["name"] == "New dashboard"
    # add a chart through the Metrics page's choices
    key = next(t.key for t in at.text_input if t.label == "Name").removesuffix("_name")
    at.text_input(key=f"{key}_name").input("Team latency")
    at.text_input(key=f"{key}_new_title").input("Requests by model")
    at.selectbox(key=f"{key}_new_kind").select("bar")
    at.selectbox(key=f"{key}_new_series").select("request_count.count")
    at.multiselect(key=f"{key}_new_group").select("model")
    at.run()
    _button(at, f"{key}_add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Requests by model" in m.value for m in at.markdown)
    # change it in place: a line of the same metric
    _button(at, f"{key}_edit_0").click().run()
    assert at.text_input(key=f"{key}_new_title").value == "Requests by model"
    at.selectbox(key=f"{key}_new_kind").select("line")
    _button(at, f"{key}_add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Requests by model** · Line" in m.value for m in at.markdown)
    assert at.text_input(key=f"{key}_new_title").value == ""  # the form is empty again
    _button(at, f"{key}_save").click().run()
    assert not at.exception, at.exception
    saved = get_dashboard(engine, scope, new_id)
    assert saved["name"] == "Team latency" and "edit" not in at.query_params
    assert [(c.kind, c.group_by) for c in saved["dashboard"].charts] == [("line", ("model",))]
    ((spec, rows),) = charts(at)  # drawn: a line per model
    assert spec["layer"][0]["mark"]["type"] == "line" and rows["group"].n_unique() >= 2
    # duplicate: a copy under a free name, opened
    _button(at, "dash_duplicate").click().run()
    copy_id = int(at.query_params["d"])
    copy = get_dashboard(engine, scope, copy_id)
    assert copy["name"] == "Copy of Team latency" and copy["dashboard"].charts == (
        saved["dashboard"].charts
    )
    # delete the copy
    _button(at, "dash_delete").click().run()
    assert copy_id not in {d["id"] for d in list_dashboards(engine, scope)}


def test_bad_json_is_refused_with_the_field_and_a_good_import_opens(boards):
    engine, ids = boards
    scope = scope_for(engine, "admin-user")
    at = open_page("admin", {"d": str(ids["Latency SLOs"])})
    bad = {"name": "Broken", "charts": [{"title": "x", "series": "total_cost.p42"}]}
    at.text_area(key="dash_import_text").input(json.dumps(bad))
    _button(at, "dash_import").click().run()
    assert not at.exception
    assert any("charts[0].series" in e.value and "p42" in e.value for e in at.error)
    good = {**bad, "charts": [{"title": "Spend", "kind": "number", "series": "total_cost.sum"}]}
    at.text_area(key="dash_import_text").input(json.dumps(good))
    _button(at, "dash_import").click().run()
    assert not at.exception, at.exception
    made = get_dashboard(engine, scope, int(at.query_params["d"]))
    assert made["name"] == "Broken" and [m.label for m in at.metric] == ["Spend"]


def test_the_period_at_the_top_applies_to_every_chart_and_the_sidebar(boards):
    engine, ids = boards
    for _ in range(3):  # the page reads "the last 7 days" at its minute: the test at the same
        at = open_page("developer", {"d": str(ids["Cost by team"]), "relative": "24h"})
        assert not at.exception, at.exception
        (bar,) = [b for b in at.button_group if b.label == "Period"]
        assert bar.value == "24h"
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        bar.set_value("7d").run(timeout=60)
        if datetime.now(UTC).replace(second=0, microsecond=0) == minute:
            break
    assert not at.exception, at.exception
    assert at.query_params["relative"] in ("7d", ["7d"])
    assert at.selectbox(key=next(s.key for s in at.selectbox if s.label == "Time")).value == "7d"
    assert any(c.value.startswith("Last 7 days") for c in at.caption)
    scope = scope_for(engine, "developer-user")
    spend = get_dashboard(engine, scope, ids["Cost by team"])["dashboard"].charts[0]
    result = run_metrics(engine, scope, spend.query(FilterSpec(relative="7d")), now=minute)
    assert {m.label: m.value for m in at.metric}["Spend"] == format.money(total(result))
