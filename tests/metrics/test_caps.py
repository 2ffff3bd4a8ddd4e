"""Bounded answers: the long tail of groups folds into "(other)", exactly; too many values or
groups are refused with a message that says how to narrow the query."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import event

from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics import caps as metric_caps
from observatory_core.metrics.catalog import Subject
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.estimate import known_groups, spans_in_range
from observatory_core.metrics.folding import OTHER
from observatory_core.metrics.query import MetricQuery
from tests.helpers import admin_scope
from tests.metrics.reference import _expr
from tests.reference import reference_llm_calls

SERIES = ("request_count.count", "duration_ms.p95", "duration_ms.avg", "error_rate.avg")


def _window(d, days: int) -> pl.DataFrame:
    """The LLM calls of the window: the subject of every series asked here (issue 24)."""
    return d["df"].filter(
        pl.col("id").is_in(list(reference_llm_calls(d["df"])))
        & (pl.col("org_id") == d["acme"])
        & (pl.col("start_time") >= d["now"] - timedelta(days=days))
        & (pl.col("start_time") < d["now"])
    )


def _reference(df: pl.DataFrame, group_by: list[str], keep: int) -> pl.DataFrame:
    """Polars: the top `keep` groups by request count, every other span as "(other)"."""
    df = df.with_columns(pl.col("project_id").alias("project"))
    counts = (
        df.group_by(group_by)
        .len()
        .sort(["len", *group_by], descending=[True] + [False] * len(group_by))
    )
    top = counts.head(keep).select(group_by).with_columns(pl.lit(True).alias("_top"))
    marked = df.join(top, on=group_by, how="left", nulls_equal=True)
    other = pl.col("_top").is_null()
    folded = marked.with_columns(
        *(
            pl.when(other)
            .then(None if g == "project" else pl.lit(OTHER))
            .otherwise(pl.col(g).cast(pl.Utf8 if g != "project" else pl.Int64))
            .alias(g)
            for g in group_by
        )
    )
    return folded.group_by(group_by).agg(*(_expr(s, pl.lit(True)).alias(s) for s in SERIES))


@pytest.mark.parametrize(
    "group_by,force", [(("user_id",), "raw"), (("model", "environment"), "rollup")]
)
def test_groups_past_the_cap_fold_into_other_exactly(metrics_data, group_by, force):
    d = metrics_data
    scope = admin_scope(d["acme"])
    spec = FilterSpec(relative="7d")
    df = _window(d, 7)
    groups = df.select(list(group_by)).unique().height
    keep = 3
    assert groups > keep + 2, "the data must have more groups than the cap"
    query = MetricQuery(series=SERIES, filters=spec, bucket=None, group_by=group_by)
    if force == "rollup":  # p95 from rollups is approximate: compare the exact series only
        query = MetricQuery(
            series=("request_count.count", "duration_ms.avg", "error_rate.avg"),
            filters=spec,
            bucket=None,
            group_by=group_by,
        )
    result = run_metrics(d["engine"], scope, query, now=d["now"], force=force, max_groups=keep)
    got = result.frame
    assert result.folded_groups == groups - keep
    assert got.height == keep + 1
    other_row = got.row(keep, named=True)
    assert (
        (other_row[group_by[0]] is None)
        if group_by[0] == "project"
        else other_row[group_by[0]] == OTHER
    )
    # the parts add up to the whole
    assert got["request_count.count"].sum() == df.height
    ref = _reference(df, list(group_by), keep)
    merged = got.join(ref, on=list(group_by), how="left", nulls_equal=True, suffix="_ref")
    assert merged.height == keep + 1
    for s in result.series:
        for g, w in zip(merged[s].to_list(), merged[f"{s}_ref"].to_list(), strict=True):
            assert w is not None and abs(g - w) <= 1e-6 * abs(w) + 1e-9, (s, g, w)
    assert OTHER in result.explanation


def test_a_series_by_many_groups_is_folded_and_complete(metrics_data):
    d = metrics_data
    query = MetricQuery(
        series=("request_count.count", "duration_ms.p95"),
        filters=FilterSpec(relative="24h"),
        bucket="1hour",
        group_by=("user_id",),
    )
    result = run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"], max_groups=4)
    frame = result.frame
    assert frame["user_id"].n_unique() == 5 and OTHER in frame["user_id"].to_list()
    assert frame.height == 24 * 5  # every hour for each kept group and "(other)"
    assert frame["request_count.count"].sum() == _window(d, 1).height
    other = frame.filter(pl.col("user_id") == OTHER)
    # "(other)" per hour against polars: spans of the groups outside the top four
    df = _window(d, 1)
    top = df.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False]).head(4)
    rest = df.join(top, on="user_id", how="anti", nulls_equal=True)
    hourly = rest.group_by(pl.col("start_time").dt.truncate("1h").alias("bucket")).agg(
        pl.len().alias("n"),
        pl.col("duration_ms").quantile(0.95, interpolation="linear").alias("p95"),
    )
    joined = other.join(hourly, on="bucket", how="left")
    assert joined["request_count.count"].to_list() == joined["n"].fill_null(0).to_list()
    for got, want in zip(joined["duration_ms.p95"].to_list(), joined["p95"].to_list(), strict=True):
        assert (got is None and want is None) or abs(got - want) <= 1e-6 * want


def test_too_many_values_are_refused_with_how_to_narrow(metrics_data):
    d = metrics_data
    query = MetricQuery(
        series=("request_count.count", "duration_ms.p95"),
        filters=FilterSpec(relative="24h"),
        bucket="1hour",
        group_by=("user_id",),
    )
    with pytest.raises(UserError, match=r"over the limit of 100 per answer.*Narrow it"):
        run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"], max_cells=100)
    # a limit (top N) that fits is answered
    fits = MetricQuery(**{**query.__dict__, "limit": 2})
    frame = run_metrics(
        d["engine"], admin_scope(d["acme"]), fits, now=d["now"], max_cells=100
    ).frame
    assert frame["user_id"].n_unique() == 2 and frame.height == 48


def test_a_grouping_with_too_many_groups_is_refused(metrics_data, monkeypatch):
    d = metrics_data
    monkeypatch.setattr(metric_caps, "MAX_SCANNED_GROUPS", 3)
    query = MetricQuery(
        series=("request_count.count",),
        filters=FilterSpec(relative="7d"),
        bucket="1hour",
        group_by=("user_id", "model"),
    )
    with pytest.raises(UserError, match="Group by fewer dimensions or filter"):
        run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"], max_groups=2)


# -- refused before the read: what the rollups already tell (issue 25) ------------------------

DAY_END = datetime(2026, 11, 20, tzinfo=UTC)  # midnight: a range of whole days, no raw edges


def _statements(engine) -> list[str]:
    """Every statement `engine` runs from now on (the listener stays: one per test engine)."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def _read_spans(statements: list[str]) -> bool:
    return any(re.search(r"\bFROM spans\b", s) for s in statements)


def _counted(d, start, end) -> pl.DataFrame:
    df = d["df"]
    return df.filter(
        (pl.col("org_id") == d["acme"])
        & pl.col("duplicate_of").is_null()
        & (pl.col("start_time") >= start)
        & (pl.col("start_time") < end)
    )


def test_the_counts_read_before_an_answer_match_the_spans(metrics_data):
    d = metrics_data
    scope = admin_scope(d["acme"])
    start = DAY_END - timedelta(days=5)
    window = _counted(d, start, DAY_END)
    calls = window.filter(pl.col("id").is_in(list(reference_llm_calls(d["df"]))))
    pairs = calls.select("model", "environment").unique().height
    args = (d["engine"], scope)
    got = known_groups(
        *args, Subject.LLM_CALLS, ("model", "environment"), FilterSpec(), start, DAY_END
    )
    assert got == pairs > 1
    # a group-by the rollups lack adds nothing; a filter they carry is applied
    assert known_groups(*args, Subject.LLM_CALLS, ("user_id",), FilterSpec(), start, DAY_END) == 0
    assert spans_in_range(*args, FilterSpec(), start, DAY_END) == window.height
    one = FilterSpec(models=("gpt-4o",))
    assert (
        spans_in_range(*args, one, start, DAY_END)
        == window.filter(pl.col("model") == "gpt-4o").height
    )
    assert spans_in_range(*args, FilterSpec(search="refund"), start, DAY_END) is None


def test_a_raw_grouping_over_too_many_spans_is_refused_before_any_span_is_read(metrics_data):
    d = metrics_data
    scope = admin_scope(d["acme"])
    start = DAY_END - timedelta(days=5)
    spans_seen = _counted(d, start, DAY_END).height
    query = MetricQuery(
        series=("request_count.count", "duration_ms.p95"),
        filters=FilterSpec(relative=None, start=start, end=DAY_END),
        bucket="1day",
        group_by=("model", "user_id"),
    )
    statements = _statements(d["engine"])
    with pytest.raises(UserError) as refused:
        run_metrics(d["engine"], scope, query, now=d["now"], max_raw_spans=spans_seen - 1)
    message = str(refused.value)
    assert f"holds over {spans_seen:,} spans" in message
    assert "declare user_id as a dimension" in message and "narrow the period" in message
    assert not _read_spans(statements)
    # at the cap it is answered, from the spans, and every LLM call is counted once
    result = run_metrics(d["engine"], scope, query, now=d["now"], max_raw_spans=spans_seen)
    assert result.source == "raw" and _read_spans(statements)
    calls = _counted(d, start, DAY_END).filter(
        pl.col("id").is_in(list(reference_llm_calls(d["df"])))
    )
    assert result.frame["request_count.count"].sum() == calls.height


def test_a_chart_the_cells_cap_refuses_is_refused_before_any_span_is_read(metrics_data):
    d = metrics_data
    scope = admin_scope(d["acme"])
    now = d["now"] - timedelta(minutes=1, seconds=13)  # ragged edges, read from spans
    series = ("request_count.count", "duration_ms.avg")
    query = MetricQuery(
        series=series,
        filters=FilterSpec(relative="2d"),
        bucket="1hour",
        group_by=("model", "environment"),
    )
    start, end = query.filters.window(now)
    buckets = len(query.bucketing(start, end).edges) - 1
    calls = _counted(d, start, end).filter(pl.col("id").is_in(list(reference_llm_calls(d["df"]))))
    groups = calls.select("model", "environment").unique().height
    statements = _statements(d["engine"])
    with pytest.raises(UserError, match=rf"x {groups:,} or more groups x 2 series"):
        run_metrics(d["engine"], scope, query, now=now, max_cells=buckets * 2 * (groups - 1))
    assert not _read_spans(statements)
    # room for every group: answered, every group in every bucket
    result = run_metrics(d["engine"], scope, query, now=now, max_cells=buckets * 2 * groups)
    assert _read_spans(statements)
    assert result.frame.select("model", "environment").unique().height == groups
    assert result.frame.height == buckets * groups
    assert result.frame["request_count.count"].sum() == calls.height
