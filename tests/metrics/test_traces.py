"""Trace metrics (subject TRACES) against polars over the raw rows grouped by trace, on both
stores: raw spans and `trace_totals` give the same figures, bucketed by first start, grouped by
the root span, filtered by the traces that contain a matching span (docs/metrics.md)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from observatory_core.accounts.permissions import Role
from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricError, MetricQuery
from observatory_core.semantic.metrics import METRICS, Subject
from tests.helpers import admin_scope
from tests.metrics.reference import reference_trace_metrics
from tests.metrics.test_engine import check

TRACE_SERIES = [
    f"{m.name}.{a.value}"
    for m in METRICS.values()
    if m.subject is Subject.TRACES
    for a in m.aggregations
]


def _ragged(d) -> FilterSpec:
    end = d["now"] - timedelta(minutes=3, seconds=5)
    return FilterSpec(relative=None, start=end - timedelta(days=2, hours=3, minutes=7), end=end)


def _run(d, query, force=None, scope=None):
    scope = scope or admin_scope(d["acme"])
    return run_metrics(d["engine"], scope, query, now=d["now"], force=force, max_groups=1000)


def _reference(d, query, result, project_ids=None):
    return reference_trace_metrics(
        d["df"],
        query.filters,
        d["now"],
        d["acme"],
        result.series,
        result.group_by,
        result.bucket_seconds,
        project_ids,
    )


def test_the_declarations_name_the_trace_figures():
    names = {m.name for m in METRICS.values() if m.subject is Subject.TRACES}
    assert names == {
        "trace_count",
        "trace_error_rate",
        "trace_duration_ms",
        "trace_cost",
        "trace_tokens",
    }


@pytest.mark.parametrize(
    ("bucket", "group_by", "projects"),
    [
        (None, (), False),
        ("1hour", (), True),
        ("1day", ("project",), False),
        (None, ("project",), True),
    ],
)
def test_trace_totals_answer_as_raw_spans_and_polars_do(metrics_data, bucket, group_by, projects):
    d = metrics_data
    spec = _ragged(d)
    if projects:
        spec = spec.replace(project_ids=(d["projects"][1],))
    query = MetricQuery(series=tuple(TRACE_SERIES), filters=spec, bucket=bucket, group_by=group_by)
    answers = {force: _run(d, query, force) for force in ("rollup", "raw")}
    assert answers["rollup"].grains == ("trace_totals",) and answers["raw"].source == "raw"
    assert _run(d, query).source == "rollup"  # the planner picks trace_totals by itself
    ref = _reference(d, query, answers["raw"])
    assert ref.height and ref["trace_count.count"].sum() > 10
    keys = (["bucket"] if bucket else []) + list(group_by)
    for result in answers.values():
        check(result, ref, keys)
        assert result.exact_percentiles  # per-trace values, exact either way


span_filters = st.builds(
    FilterSpec,
    relative=st.sampled_from(["24h", "3d", "7d"]),
    models=st.sampled_from([(), ("gpt-4o",)]),
    statuses=st.sampled_from([(), ("error",)]),
    operations=st.sampled_from([(), ("execute_tool",)]),
    user_ids=st.sampled_from([(), ("user-1", "user-2")]),
)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    series=st.lists(st.sampled_from(TRACE_SERIES), min_size=1, max_size=4, unique=True),
    group_by=st.lists(
        st.sampled_from(["project", "model", "operation", "status", "user_id"]),
        max_size=2,
        unique=True,
    ),
    bucket=st.sampled_from([None, "1hour", "1day"]),
    spec=span_filters,
)
def test_trace_metrics_match_polars_with_span_filters(metrics_data, series, group_by, bucket, spec):
    d = metrics_data
    query = MetricQuery(series=tuple(series), filters=spec, bucket=bucket, group_by=tuple(group_by))
    result = _run(d, query)
    keys = (["bucket"] if result.bucket_seconds else []) + list(group_by)
    check(result, _reference(d, query, result), keys)


def test_a_trace_falls_in_the_bucket_of_its_first_start(metrics_data):
    d = metrics_data
    query = MetricQuery(series=("trace_count",), filters=_ragged(d), bucket=None)
    got = _run(d, query).frame["trace_count.count"].item()
    start, end = _ragged(d).window(d["now"])
    acme = d["df"].filter(pl.col("org_id") == d["acme"])
    firsts = acme.group_by("trace_id").agg(pl.col("start_time").min())
    want = firsts.filter((pl.col("start_time") >= start) & (pl.col("start_time") < end)).height
    assert got == want
    # the distinct trace ids among the window's spans would also count traces begun before it
    assert (
        got
        <= acme.filter((pl.col("start_time") >= start) & (pl.col("start_time") < end))[
            "trace_id"
        ].n_unique()
    )


def test_project_scope_limits_the_trees(metrics_data):
    d = metrics_data
    bot = d["projects"][0]
    scope = admin_scope(d["acme"], project_ids=frozenset({bot}))
    query = MetricQuery(
        series=("trace_count", "trace_tokens.sum", "trace_duration_ms.max"),
        filters=_ragged(d),
        bucket=None,
    )
    for force in ("raw", "rollup"):
        result = _run(d, query, force, scope)
        ref = _reference(d, query, result, frozenset({bot}))
        check(result, ref, [])


def test_a_query_charts_one_subject(metrics_data):
    d = metrics_data
    query = MetricQuery(series=("trace_count", "request_count"), bucket=None)
    with pytest.raises(MetricError, match="chart them separately"):
        _run(d, query)


def test_cost_per_trace_needs_costs_read(metrics_data):
    d = metrics_data
    with pytest.raises(UserError, match="cannot see costs"):
        _run(d, MetricQuery(series=("trace_cost.sum",)), scope=admin_scope(d["acme"], Role.VIEWER))
