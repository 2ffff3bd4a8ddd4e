"""`run_metric_totals`: the totals of several windows in one statement on the span store (the
Overview's period and the one before), each window's answer that of its own `run_metrics` and
of polars over the raw rows; on SQLite and PostgreSQL it declines (tests/metrics/conftest.py
runs this module on the three stores)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import event

from observatory_core.accounts.permissions import Role
from observatory_core.base.zones import UTC_ZONE, Zone
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.metrics.totals import run_metric_totals
from tests.helpers import admin_scope
from tests.metrics.reference import reference_metrics
from tests.metrics.test_engine import check

SERIES = (
    "request_count.count",
    "error_count.count",
    "total_cost.sum",
    "total_tokens.avg",
    "total_tokens.stddev",
    "duration_ms.avg",
    "duration_ms.p95",
)


def _queries(data, filters: dict, windows: int = 2) -> list[MetricQuery]:
    """Windows of 2.5 days ending at a ragged minute, each just before the last."""
    end = data["now"] - timedelta(days=0.3, seconds=7)
    length = timedelta(days=2.5)
    return [
        MetricQuery(
            series=SERIES,
            bucket=None,
            filters=FilterSpec(
                relative=None, start=end - (i + 1) * length, end=end - i * length, **filters
            ),
        )
        for i in range(windows)
    ]


@pytest.mark.parametrize(
    "filters", [{}, {"models": ("gpt-4o",)}, {"environments": ("production",)}]
)
@pytest.mark.parametrize("projects", [None, "first"])
def test_each_windows_totals_are_its_own_and_polars(metrics_data, metrics_store, filters, projects):
    d = metrics_data
    limited = None if projects is None else frozenset({d["projects"][0]})
    scope = admin_scope(d["acme"], project_ids=limited)
    queries = _queries(d, filters)
    seen: list[str] = []
    listener = lambda *a: seen.append(a[2])  # noqa: E731
    event.listen(d["engine"], "before_cursor_execute", listener)
    try:
        got = run_metric_totals(d["engine"], scope, queries, now=d["now"])
    finally:
        event.remove(d["engine"], "before_cursor_execute", listener)
    if metrics_store != "chdb":
        assert got is None  # the other stores read each window as before
        return
    assert got is not None and len(seen) == 1  # both windows, one statement
    for query, result in zip(queries, got, strict=True):
        alone = run_metrics(d["engine"], scope, query, now=d["now"])
        assert (result.start, result.end) == (alone.start, alone.end)
        assert result.grains == alone.grains and result.explanation == alone.explanation
        assert result.frame.columns == alone.frame.columns
        # the same merged bins: the percentile is the same number, and so is the sketch
        assert result.frame["duration_ms.p95"].to_list() == alone.frame["duration_ms.p95"].to_list()
        assert (result.sketch == alone.sketch).all()
        check(result, alone.frame, [])
        if limited is None:  # polars' reference reads the org's rows (test_engine.py)
            spec = query.filters
            ref = reference_metrics(d["df"], spec, d["now"], d["acme"], SERIES, (), None)
            check(result, ref, [])


def test_a_window_without_spans_gets_the_empty_totals(metrics_data, metrics_store):
    d = metrics_data
    scope = admin_scope(d["acme"])
    far = MetricQuery(
        series=SERIES,
        bucket=None,
        filters=FilterSpec(
            relative=None,
            start=d["now"] - timedelta(days=400),
            end=d["now"] - timedelta(days=390),
        ),
    )
    queries = [_queries(d, {})[0], far]
    got = run_metric_totals(d["engine"], scope, queries, now=d["now"])
    if metrics_store != "chdb":
        assert got is None
        return
    alone = run_metrics(d["engine"], scope, far, now=d["now"])
    assert got[1].frame.to_dicts() == alone.frame.to_dicts()
    assert got[1].frame["request_count.count"].item() == 0


def test_overlapping_windows_or_other_shapes_are_declined(metrics_data, metrics_store):
    d = metrics_data
    scope = admin_scope(d["acme"])
    one, two = _queries(d, {})
    overlapping = MetricQuery(
        series=SERIES,
        bucket=None,
        filters=one.filters.replace(start=one.filters.start - timedelta(hours=1)),
    )
    grouped = MetricQuery(series=SERIES, bucket=None, group_by=("model",), filters=two.filters)
    other = MetricQuery(series=SERIES, bucket=None, filters=two.filters.replace(models=("gpt-4o",)))
    for queries in ([one, overlapping], [one, grouped], [one, other]):
        assert run_metric_totals(d["engine"], scope, queries, now=d["now"]) is None


def _boundary(data) -> datetime:
    """A time 100 ms after a model call of a trace whose next model call starts 200 ms later,
    about two days back: requests on both sides of it in the same minute (hour and day)."""
    df = data["df"].filter(
        (pl.col("org_id") == data["acme"]) & pl.col("operation").is_in(["chat", "embeddings"])
    )
    calls = df.group_by("trace_id").agg(
        pl.col("start_time").min().alias("first"), pl.col("start_time").max().alias("last")
    )
    target = (data["now"] - timedelta(days=2)).replace(tzinfo=None)
    first = (
        calls.filter(pl.col("last") > pl.col("first"))
        .with_columns((pl.col("first").cast(pl.Datetime("us")) - target).abs().alias("d"))
        .sort("d")["first"][0]
    )
    first = first if first.tzinfo else first.replace(tzinfo=UTC)
    assert first.second == 0  # a trace's spans lie 200 ms apart from its minute
    return first + timedelta(milliseconds=100)


def _shapes(data) -> dict[str, list[tuple[datetime, datetime]]]:
    b = _boundary(data)
    kolkata = Zone("Asia/Kolkata")
    midnight = kolkata.midnight(kolkata.today(b))  # 18:30 UTC: whole hours, ragged days
    d, h, s = timedelta(days=1), timedelta(hours=1), timedelta(seconds=1)
    return {
        # touching inside a minute that holds spans of both (the same day bucket of raw edges)
        "touching, long": [(b, b + d + 5 * h + 3.3 * s), (b - 2 * d - 3 * h - 671 * s, b)],
        "touching, inside one day": [(b, b + 2.5 * h), (b - 4 * h - 7 * s, b)],
        "touching, under a minute each": [(b, b + 50 * s), (b - 40 * s, b)],
        "apart, the same minute": [(b + 0.05 * s, b + 20 * s), (b - 30 * s, b - 0.05 * s)],
        "three, out of order": [(b, b + d), (b - 3 * d - 0.5 * s, b - d), (b - d, b)],
        "Kolkata's days": [(midnight, midnight + d), (midnight - d, midnight)],
        "23 hours and 25": [(b, b + 23 * h), (b - 25 * h, b)],
    }


@pytest.mark.parametrize(
    "shape",
    [
        "touching, long",
        "touching, inside one day",
        "touching, under a minute each",
        "apart, the same minute",
        "three, out of order",
        "Kolkata's days",
        "23 hours and 25",
    ],
)
@pytest.mark.parametrize("who", ["admin", "viewer, one project"])
def test_windows_of_every_shape_are_each_their_run_metrics(metrics_data, metrics_store, shape, who):
    """Windows that touch inside a minute holding spans of both, lie apart in one minute,
    come out of order, start at a zone's midnight or last 23 and 25 hours: each window's
    figures are its own `run_metrics`' (counts exact, the same bins) and polars'."""
    d = metrics_data
    series = SERIES if who == "admin" else tuple(s for s in SERIES if "cost" not in s)
    limited = None if who == "admin" else frozenset({d["projects"][0]})
    role = Role.ADMIN if who == "admin" else Role.VIEWER
    scope = admin_scope(d["acme"], role=role, project_ids=limited)
    zone = Zone("Asia/Kolkata") if shape == "Kolkata's days" else UTC_ZONE
    queries = [
        MetricQuery(
            series=series,
            bucket=None,
            zone=zone,
            filters=FilterSpec(relative=None, start=a, end=b),
        )
        for a, b in _shapes(d)[shape]
    ]
    got = run_metric_totals(d["engine"], scope, queries, now=d["now"])
    if metrics_store != "chdb":
        assert got is None
        return
    assert got is not None
    for query, result in zip(queries, got, strict=True):
        alone = run_metrics(d["engine"], scope, query, now=d["now"])
        assert (result.start, result.end, result.grains) == (alone.start, alone.end, alone.grains)
        g, w = result.frame.to_dicts()[0], alone.frame.to_dicts()[0]
        for s in series:
            if s.endswith((".count", ".p95")) or None in (g[s], w[s]):
                assert g[s] == w[s], (s, g[s], w[s])
            else:
                assert g[s] == pytest.approx(w[s], rel=1e-9, nan_ok=True), (s, g[s], w[s])
        assert (result.sketch == alone.sketch).all()
        ref = reference_metrics(
            d["df"], query.filters, d["now"], d["acme"], series, (), None, project_ids=limited
        )
        assert g["request_count.count"] == ref["request_count.count"][0]
        check(result, ref, [])
