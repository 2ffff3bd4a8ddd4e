"""`run_metric_totals`: the totals of several windows in one statement on the span store (the
Overview's period and the one before), each window's answer that of its own `run_metrics` and
of polars over the raw rows; on SQLite and PostgreSQL it declines (tests/metrics/conftest.py
runs this module on the three stores)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metric_totals, run_metrics
from observatory_core.metrics.query import MetricQuery
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
