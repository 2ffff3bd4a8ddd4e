"""Each metric counts the rows of its subject (issue 24 §1): on demo data (loaded once per
store), every figure of every subject equals polars over the raw rows of that subject, from
raw spans and from rollups; requests are the chat and embeddings spans, nothing else."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS, PERCENTILES, Agg
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.semantic.metrics import Subject
from tests.helpers import END, admin_scope
from tests.metrics.reference import SUBJECTS, reference_metrics
from tests.metrics.test_engine import check
from tests.reference import reference_llm_calls

SPEC = FilterSpec(relative=None, start=END - timedelta(days=3), end=END)
# every series the rollups can answer (percentiles only of the sketched latency) ...
ROLLUP_SERIES = tuple(
    f"{m.name}.{a.value}"
    for m in METRICS.values()
    if m.rollup is not None and m.subject is not Subject.TRACES
    for a in m.aggregations
    if a not in PERCENTILES or m.rollup.sketch
)
# ... and every series of every span subject from raw spans
RAW_SERIES = tuple(
    f"{m.name}.{a.value}"
    for m in METRICS.values()
    if m.subject is not Subject.TRACES
    for a in m.aggregations
)


def _org(demo) -> int:
    return int(demo["df"]["org_id"].min())


def test_every_metric_declares_the_subject_the_reference_counts():
    assert {m.name: m.subject.value for m in METRICS.values() if m.name in SUBJECTS} == SUBJECTS


def test_requests_are_the_chat_and_embeddings_spans(demo_store):
    df = demo_store["df"]
    calls = reference_llm_calls(df)
    by_operation = dict(df.group_by("operation").len().iter_rows())
    assert len(calls) == by_operation["chat"] + by_operation["embeddings"]
    assert set(df.filter(pl.col("llm_call"))["id"].to_list()) == calls
    assert {"invoke_agent", "execute_tool", "retrieval", "other"} <= set(by_operation)


@pytest.mark.parametrize(
    ("force", "group_by", "bucket"),
    [
        ("raw", (), None),
        ("rollup", (), None),
        ("raw", ("operation",), None),
        ("rollup", ("model",), None),
        ("rollup", ("llm_call", "environment"), None),
        ("rollup", (), "1hour"),
        ("raw", ("model",), "1day"),
    ],
)
def test_every_figure_of_each_subject_matches_polars(demo_store, force, group_by, bucket):
    engine, df = demo_store["engine"], demo_store["df"]
    org = _org(demo_store)
    series = ROLLUP_SERIES if force == "rollup" else RAW_SERIES
    for part in range(0, len(series), 12):  # a few series at a time, of mixed subjects
        query = MetricQuery(
            series=series[part : part + 12], filters=SPEC, bucket=bucket, group_by=group_by
        )
        result = run_metrics(engine, admin_scope(org), query, now=END, force=force)
        assert result.source == force
        ref = reference_metrics(
            df, SPEC, END, org, result.series, result.group_by, result.bucket_seconds
        )
        keys = (["bucket"] if result.bucket_seconds else []) + list(group_by)
        check(result, ref, keys)


def test_llm_calls_only_filter_and_group_read_the_same_flag(demo_store):
    engine, df = demo_store["engine"], demo_store["df"]
    org = _org(demo_store)
    only = SPEC.replace(llm_call=("yes",))
    for force in ("raw", "rollup"):
        query = MetricQuery(
            series=("span_count.count", "request_count.count"), filters=only, bucket=None
        )
        row = run_metrics(engine, admin_scope(org), query, now=END, force=force).frame.row(
            0, named=True
        )
        assert row["span_count.count"] == row["request_count.count"] > 0, force
        grouped = run_metrics(
            engine,
            admin_scope(org),
            MetricQuery(
                series=("span_count.count",), filters=SPEC, bucket=None, group_by=("llm_call",)
            ),
            now=END,
            force=force,
        ).frame
        assert dict(grouped.iter_rows())["yes"] == row["request_count.count"], force
    assert Agg.COUNT in METRICS["span_count"].aggregations
    ref = reference_metrics(df, only, END, org, ("span_count.count",), (), None)
    assert ref.item() == row["span_count.count"]


def test_tool_calls_by_tool_name(demo_store):
    """Per-tool counts, error rates and latency: a group-by of the span name."""
    engine, df = demo_store["engine"], demo_store["df"]
    org = _org(demo_store)
    series = ("tool_call_count.count", "tool_call_error_rate.avg", "tool_call_duration_ms.p95")
    result = run_metrics(
        engine,
        admin_scope(org),
        MetricQuery(series=series, filters=SPEC, bucket=None, group_by=("name",)),
        now=END,
    )
    ref = reference_metrics(df, SPEC, END, org, series, ("name",), None)
    check(result, ref, ["name"])
    assert result.frame.height >= 2 and set(result.frame["name"]) == set(ref["name"])
