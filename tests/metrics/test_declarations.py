"""Every declared metric that rollups keep answers the same from rollups as from raw spans, and
as polars over the raw rows, on both stores; so does a new declaration reusing their columns."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.semantic.metrics import (
    METRICS,
    PERCENTILES,
    VALUE_AGGS,
    Agg,
    Kind,
    Metric,
    Partials,
    Subject,
)
from tests.helpers import admin_scope
from tests.metrics.reference import reference_metrics
from tests.metrics.test_engine import check

# Read from the declarations, so a new metric with rollup partials is checked without a list.
ROLLUP_SERIES = tuple(
    f"{m.name}.{a.value}"
    for m in METRICS.values()
    if m.rollup is not None
    for a in m.aggregations
    if a not in PERCENTILES or m.rollup.sketch
)


def _ragged(d) -> FilterSpec:
    """Edges inside minutes, hours and days, so every grain and the raw edges take part."""
    end = d["now"] - timedelta(minutes=3, seconds=5)
    return FilterSpec(relative=None, start=end - timedelta(days=2, hours=3, minutes=7), end=end)


def _answers(d, series: tuple[str, ...], bucket, group_by):
    query = MetricQuery(series=series, filters=_ragged(d), bucket=bucket, group_by=group_by)
    scope = admin_scope(d["acme"])
    return {
        force: run_metrics(d["engine"], scope, query, now=d["now"], force=force, max_groups=1000)
        for force in ("rollup", "raw")
    }


def test_the_declarations_cover_every_kind_with_rollups():
    kinds = {METRICS[s.split(".")[0]].kind for s in ROLLUP_SERIES}
    assert kinds == {Kind.ROWS, Kind.SHARE, Kind.VALUE}
    assert "request_count.count" in ROLLUP_SERIES and "duration_ms.p95" in ROLLUP_SERIES


@pytest.mark.parametrize(
    ("bucket", "group_by"), [(None, ()), ("1hour", ("model",)), ("1day", ("status", "project"))]
)
def test_every_declared_rollup_metric_answers_as_raw_spans_do(metrics_data, bucket, group_by):
    d = metrics_data
    answers = _answers(d, ROLLUP_SERIES, bucket, group_by)
    assert answers["rollup"].source == "rollup" and answers["raw"].source == "raw"
    ref = reference_metrics(
        d["df"],
        _ragged(d),
        d["now"],
        d["acme"],
        ROLLUP_SERIES,
        group_by,
        answers["raw"].bucket_seconds,
    )
    keys = (["bucket"] if bucket else []) + list(group_by)
    for result in answers.values():
        check(result, ref, keys)


# Declared here once each, over columns the rollups already keep: a value metric over the
# output tokens' measure, and a share of the error count; over LLM calls, as their twins are.
COMPLETION_TOKENS = Metric(
    "completion_tokens",
    "Completion tokens",
    "tokens",
    Subject.LLM_CALLS,
    Kind.VALUE,
    VALUE_AGGS,
    lambda c: c.output_tokens,
    Partials("output_tokens", layout=4),
)
FAILED_SHARE = Metric(
    "failed_share",
    "Failed share",
    "ratio",
    Subject.LLM_CALLS,
    Kind.SHARE,
    (Agg.AVG,),
    lambda c: c.status == "error",
    Partials("error_count", of="span_count"),
)


def test_a_new_declaration_reusing_rollup_columns_answers_from_them(metrics_data, monkeypatch):
    d = metrics_data
    for m in (COMPLETION_TOKENS, FAILED_SHARE):
        monkeypatch.setitem(METRICS, m.name, m)
    series = (
        "completion_tokens.sum",
        "completion_tokens.avg",
        "completion_tokens.stddev",
        "completion_tokens.max",
        "failed_share.avg",
    )
    answers = _answers(d, series, "1hour", ("model",))
    assert answers["rollup"].source == "rollup"
    # the same figures as the metrics whose columns they reuse
    twins = _answers(
        d,
        (
            "output_tokens.sum",
            "output_tokens.avg",
            "output_tokens.stddev",
            "output_tokens.max",
            "error_rate.avg",
        ),
        "1hour",
        ("model",),
    )
    for force in ("rollup", "raw"):
        got = answers[force].frame.rename(dict(zip(series, twins[force].series, strict=True)))
        assert got.equals(twins[force].frame), force
    raw = answers["raw"].frame
    rolled = answers["rollup"].frame
    for s in series:
        for a, b in zip(raw[s].to_list(), rolled[s].to_list(), strict=True):
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= 1e-6 * abs(a) + 1e-9)
