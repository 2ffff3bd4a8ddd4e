"""Every chart of a time series draws a bucket that is not over differently (lighter, dotted)
and says in its hover how much of it has passed (issue 24 §3)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from observatory_core.accounts.users import scope_for
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import MetricResult, run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.reports.overview import budget_burn, cost_per_day_by_model
from observatory_core.reports.summary import home_summary
from observatory_core.ui import home_view, metrics_view, overview_view
from tests.ui.test_metrics_pages import open_page

T0 = datetime(2026, 11, 19, 8, tzinfo=UTC)
H = timedelta(hours=1)


def _result(partial: dict) -> MetricResult:
    buckets = [T0 + i * H for i in range(5)]
    frame = pl.DataFrame(
        {"bucket": buckets, "request_count.count": [10, 40, 42, 39, 12]},
        schema={"bucket": pl.Datetime("us", "UTC"), "request_count.count": pl.Int64},
    )
    return MetricResult(
        frame=frame,
        series=("request_count.count",),
        group_by=(),
        bucket_seconds=3600,
        start=T0 + 40 * timedelta(minutes=1),
        end=T0 + 4 * H + 15 * timedelta(minutes=1),
        source="raw",
        grains=(),
        exact_percentiles=None,
        seconds=0.0,
        partial_buckets=partial,
    )


def _gaps(values) -> list:
    """A trace's values with its gaps as None: a numpy trace holds NaN (drawn the same), and
    its JSON packs the numbers as plotly.js reads them ({"dtype", "bdata"})."""
    if isinstance(values, dict):
        values = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return [None if v is None or v != v else float(v) for v in values]


def test_the_metrics_chart_ends_its_line_at_the_last_whole_bucket():
    result = _result({T0: 1200.0, T0 + 4 * H: 900.0})
    figure, groups = metrics_view.chart(result, None)
    line, cut = figure.data
    assert _gaps(line.y) == [None, 40, 42, 39, None]  # the whole buckets only
    assert len(groups) == len(figure.data)
    # the partial buckets, dotted and lighter, joined to their whole neighbours
    assert cut.line.dash == "dot" and cut.opacity < 1 and cut.line.color == line.line.color
    assert list(cut.y) == [10, 40, None, 39, 12]
    assert list(cut.marker.size) == [7, 0, 0, 0, 7]
    assert "partial: 33% of the hour" in cut.text[0] and "25% of the hour" in cut.text[4]
    assert "partial" not in " ".join(line.text)
    assert "cuts short" in metrics_view.caption(result, False)


def test_a_series_without_partial_buckets_is_drawn_as_before():
    figure, groups = metrics_view.chart(_result({}), None)
    assert len(figure.data) == 1 and _gaps(figure.data[0].y) == [10, 40, 42, 39, 12]
    assert "cuts short" not in metrics_view.caption(_result({}), False)


def test_the_number_table_marks_the_partial_buckets():
    shown, config = metrics_view.shown_table(_result({T0: 1200.0, T0 + 4 * H: 900.0}))
    assert shown["Bucket covered"].to_list() == [
        "partial: 33% of the hour",
        "",
        "",
        "",
        "partial: 25% of the hour",
    ]
    assert "Bucket covered" in config
    whole, _ = metrics_view.shown_table(_result({}))
    assert "Bucket covered" not in whole.columns


def _figure(at, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def test_the_metrics_page_draws_the_cut_hours_apart(app_env):
    now = datetime.now(UTC)
    start = (now - timedelta(hours=30)).replace(minute=20, second=0, microsecond=0)
    end = (now - timedelta(hours=2)).replace(minute=45, second=0, microsecond=0)
    at = open_page(
        "pages/metrics.py",
        params={
            "relative": "7d",
            "m": "request_count.count",
            "b": "1hour",
            "cmp": "0",
            "zoom": f"{start.isoformat()}~{end.isoformat()}",
        },
    )
    assert not at.exception, at.exception
    traces = _figure(at)["data"]
    line, cut = traces
    first, last = start.replace(minute=0), end.replace(minute=0)
    ys = _gaps(line["y"])
    assert ys[0] is None and ys[-1] is None
    assert all(v is not None for v in ys[1:-1])
    assert cut["line"]["dash"] == "dot" and cut["opacity"] < 1
    sizes = cut["marker"]["size"]
    assert [i for i, s in enumerate(sizes) if s] == [0, len(sizes) - 1]
    assert "partial: 67% of the hour" in cut["text"][0]  # 08:20 to 09:00
    assert "partial: 75% of the hour" in cut["text"][-1]  # 10:00 to 10:45
    drawn = [datetime.fromisoformat(x).replace(tzinfo=UTC) for x in cut["x"]]
    assert drawn[0] == first and drawn[-1] == last


def test_home_draws_the_first_and_last_hour_lighter(app_env):
    engine, _ = app_env
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - H
    summary = home_summary(engine, scope_for(engine, "admin-user"), now=now)
    bars = home_view.requests_chart(summary).data[0]
    opacity = list(bars.marker.opacity)
    assert len(opacity) == 25 and opacity[0] < 1 and opacity[-1] < 1
    assert set(opacity[1:-1]) == {1.0}
    assert "partial: 50% of the hour" in bars.hovertext[0]
    assert "partial: 50% of the hour" in bars.hovertext[-1]


def test_overview_draws_today_lighter_in_cost_per_day_and_the_budget(app_env):
    engine, _ = app_env
    scope = scope_for(engine, "admin-user")
    now = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    daily = cost_per_day_by_model(engine, scope, FilterSpec(relative="7d"), now=now)
    figure = overview_view.cost_per_day(daily.frame, daily.partial_buckets)
    today = now.replace(hour=0)
    for bar in figure.data:
        days = [datetime.fromisoformat(str(x)).astimezone(UTC) for x in bar.x]
        for day, opacity, text in zip(days, bar.marker.opacity, bar.hovertext, strict=True):
            cut = day in (today, today - timedelta(days=7))  # the 7 days start at 06:00
            assert (opacity < 1) == cut, day
            assert ("partial" in text) == cut
    burn = budget_burn(engine, scope, now=now)
    point = overview_view.budget_figure(burn).data[0]
    assert list(point.marker.opacity)[-1] < 1 and set(list(point.marker.opacity)[:-1]) <= {1.0}
    assert "partial: 25% of the day" in point.hovertext[-1]


def test_the_partial_buckets_come_from_the_engine(app_env):
    """The figures above read what the engine says (not a guess from the clock)."""
    engine, _ = app_env
    now = datetime.now(UTC).replace(minute=10, second=0, microsecond=0)
    result = run_metrics(
        engine,
        scope_for(engine, "admin-user"),
        MetricQuery(
            series=("request_count.count",), filters=FilterSpec(relative="24h"), bucket="1hour"
        ),
        now=now,
    )
    assert set(result.partial_buckets.values()) == {600.0, 3000.0}
