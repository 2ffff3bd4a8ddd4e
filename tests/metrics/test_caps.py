"""Bounded answers: the long tail of groups folds into "(other)", exactly; too many values or
groups are refused with a message that says how to narrow the query."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics import engine as metrics_engine
from observatory_core.metrics.engine import run_metrics
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
    monkeypatch.setattr(metrics_engine, "MAX_SCANNED_GROUPS", 3)
    query = MetricQuery(
        series=("request_count.count",),
        filters=FilterSpec(relative="7d"),
        bucket="1hour",
        group_by=("user_id", "model"),
    )
    with pytest.raises(UserError, match="Group by fewer dimensions or filter"):
        run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"], max_groups=2)
