"""The Vega-Lite specs of the dashboards' charts against polars over the raw rows: each bar
and slice adds up to the spans it stands for, drawn at the reader's wall-clock time; dense
lines lose their markers, cut buckets are dotted, colours and axes follow the plotly charts'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from observatory_core.accounts.tenancy import org_id_by_slug
from observatory_core.base.zones import Zone
from observatory_core.dashboards.model import chart_from_dict
from observatory_core.dashboards.render import load_chart
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.storage.engine import get_engine
from observatory_core.ui import colors
from observatory_core.ui import dashboard_charts as dc
from tests.helpers import admin_scope, all_spans
from tests.metrics.reference import reference_metrics

TOKYO = "Asia/Tokyo"
# 17 minutes before the hour (in the demo's last hour): the first and last 5-minute and hourly
# buckets are cut short
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(minutes=17)
SPEC = FilterSpec(relative="24h")


@pytest.fixture(scope="module")
def drawn(app_db):
    """The UI tests' demo database (its data ends a minute before the session started)."""
    engine = get_engine(app_db[0])
    with engine.connect() as conn:
        org_id = org_id_by_slug(conn, "acme")
    scope = admin_scope(org_id)

    def run(query, top):
        return run_metrics(engine, scope, query, now=NOW, max_groups=top)

    def chart(**data):
        loaded = load_chart(run, scope, chart_from_dict(data, 0), SPEC, Zone(TOKYO))
        rows, spec = dc.chart_spec(loaded)
        return loaded, rows, spec

    yield {"df": all_spans(engine), "org_id": org_id, "chart": chart}
    engine.dispose()


def _wall_ms(instant: datetime) -> int:
    """A UTC instant as Tokyo's wall clock, in epoch ms read as UTC (what the axis draws)."""
    wall = instant.replace(tzinfo=UTC).astimezone(ZoneInfo(TOKYO)).replace(tzinfo=None)
    return int(wall.replace(tzinfo=UTC).timestamp() * 1000)


def test_stacked_bars_add_up_to_each_hours_spans_at_the_readers_time(drawn):
    _, rows, spec = drawn["chart"](
        title="Errors",
        kind="bar",
        series="request_count.count",
        bucket="1hour",
        group_by=["provider"],
        top=3,
    )
    reference = reference_metrics(
        drawn["df"], SPEC, NOW, drawn["org_id"], ("request_count.count",), (), 3600, zone=TOKYO
    )
    expected = {
        _wall_ms(b): v
        for b, v in zip(reference["bucket"], reference["request_count.count"], strict=True)
    }
    tops = rows.group_by(dc.START).agg(pl.col(dc.HIGH).max(), pl.col(dc.VALUE).sum())
    got = dict(zip(tops[dc.START], tops[dc.HIGH], strict=True))
    assert len(got) == 25 and set(expected) <= set(got)  # 24 hours and a cut one
    expected = {start: expected.get(start, 0) for start in got}  # an hour without spans: 0
    assert got == pytest.approx(expected)
    assert dict(zip(tops[dc.START], tops[dc.VALUE], strict=True)) == pytest.approx(expected)
    enc = spec["encoding"]
    assert (enc["y"]["field"], enc["y2"]["field"], enc["x2"]["field"]) == (dc.HIGH, dc.LOW, dc.END)
    assert enc["x"]["scale"] == {"type": "utc"}  # the wall clock drawn as written
    assert (rows[dc.END] - rows[dc.START]).unique().to_list() == [3_600_000]
    first = rows.sort(dc.START).row(0, named=True)
    assert first[dc.WHEN] == datetime.fromtimestamp(first[dc.START] / 1000, UTC).strftime(
        "%Y-%m-%d %H:%M"
    )


def test_a_pie_of_spend_adds_up_to_the_whole_spend_in_the_groups_colours(drawn):
    loaded, rows, spec = drawn["chart"](
        title="Spend by model", kind="pie", series="total_cost.sum", group_by=["model"], top=4
    )
    whole = reference_metrics(
        drawn["df"], SPEC, NOW, drawn["org_id"], ("total_cost.sum",), (), None
    )["total_cost.sum"][0]
    assert rows[dc.VALUE].sum() == pytest.approx(whole, rel=1e-9)
    assert rows.height == 5 and rows[dc.GROUP][-1] == "(other)"  # 4 models and the rest
    arc = spec["layer"][0]["encoding"]
    labels = rows[dc.GROUP].to_list()
    assert arc["color"]["scale"]["domain"] == labels
    assert arc["color"]["scale"]["range"] == [colors.assign(labels)[x] for x in labels]
    assert arc["color"]["legend"]["orient"] == "bottom"
    assert all(t.startswith("$") for t in rows[dc.TEXT])


def test_dense_lines_lose_their_markers_and_cut_buckets_are_dotted(drawn):
    dense = drawn["chart"](
        title="p95", kind="line", series="duration_ms.p95", bucket="5min", group_by=["provider"]
    )
    sparse = drawn["chart"](
        title="Requests", kind="line", series="request_count.count", bucket="1hour"
    )
    for _, rows, spec in (dense, sparse):
        points = rows.filter(pl.col(dc.GROUP) == rows[dc.GROUP][0]).height
        line, dotted, cut = spec["layer"]
        assert line["mark"]["point"] is (points <= 60), points
        assert line["transform"] == [{"filter": f"!datum.{dc.CUT}"}]
        assert dotted["mark"]["strokeDash"] and cut["mark"]["filled"] is False
        cuts = rows.filter(pl.col(dc.CUT))
        assert cuts.height and all("partial:" in t for t in cuts[dc.TEXT])
    loaded, rows, spec = dense
    assert rows.filter(pl.col(dc.GROUP) == rows[dc.GROUP][0]).height == 289
    assert spec["layer"][0]["encoding"]["color"]["legend"]["symbolType"] == "stroke"
    # a p95 of seconds is drawn in seconds, as the hover says it
    assert spec["layer"][0]["encoding"]["y"]["axis"]["labelExpr"] == "datum.label + ' s'"
    assert rows[dc.VALUE].max() == pytest.approx(
        loaded.result.frame["duration_ms.p95"].max() / 1000
    )
    loaded, rows, spec = sparse
    assert spec["layer"][0]["encoding"]["color"]["legend"] is None  # one series: no legend
    requests = reference_metrics(
        drawn["df"], SPEC, NOW, drawn["org_id"], ("request_count.count",), (), None
    )["request_count.count"][0]
    assert rows[dc.VALUE].sum() == requests and rows.height == 25


def test_large_charts_are_left_to_streamlits_renderer(drawn, monkeypatch):
    """SVG (text a screen reader finds) up to SVG_ROWS rows; past it, Streamlit's choice."""
    bars = dict(title="Requests", kind="bar", series="request_count.count", bucket="1hour")
    _, rows, spec = drawn["chart"](**bars)
    assert spec["usermeta"]["embedOptions"]["renderer"] == "svg"
    monkeypatch.setattr(dc, "SVG_ROWS", rows.height - 1)
    assert "usermeta" not in drawn["chart"](**bars)[2]
