"""The independent reference for metrics: polars over the raw rows."""

from __future__ import annotations

import re
from datetime import datetime

import polars as pl

from observatory_core.filters.spec import FilterSpec
from tests.reference import reference_ids, reference_llm_calls, subject_mask

_PCT = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
_COLUMN = {
    "duration_ms": "duration_ms",
    "ttft_ms": "ttft_ms",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "total_tokens": "total_tokens",
    "input_cost": "input_cost_usd",
    "output_cost": "output_cost_usd",
    "total_cost": "total_cost_usd",
    "tokens_per_second": "tps",
    "quality_score": "quality_score",
}


# Each metric's subject, written here again (not read from the declarations): requests and
# their figures are LLM calls (issue 24).
SUBJECTS = {
    **dict.fromkeys(
        (
            "request_count",
            "error_count",
            "error_rate",
            "success_rate",
            *(m for m in _COLUMN if m != "quality_score"),
        ),
        "llm_calls",
    ),
    **dict.fromkeys(("unique_users", "span_count", "quality_score"), "spans"),
    **dict.fromkeys(
        ("trace_count", "trace_error_rate", "trace_duration_ms", "trace_cost", "trace_tokens"),
        "traces",
    ),
    **{f"tool_call_{x}": "tool_calls" for x in ("count", "error_rate", "duration_ms")},
    **{f"agent_run_{x}": "agent_runs" for x in ("count", "error_rate", "duration_ms")},
    **{f"retrieval_{x}": "retrievals" for x in ("count", "error_rate", "duration_ms")},
}
_OPERATION_METRIC = re.compile(r"^(tool_call|agent_run|retrieval)_(count|error_rate|duration_ms)$")


def _expr(name: str, rows: pl.Expr) -> pl.Expr:
    """Series `name` over the group's rows where `rows` (its subject) holds."""
    metric, agg = name.split(".")
    is_error = (pl.col("status") == "error").cast(pl.Float64).filter(rows)
    if match := _OPERATION_METRIC.match(metric):
        metric = {"count": "request_count", "error_rate": "error_rate"}.get(
            match.group(2), "duration_ms"
        )
    if metric in ("request_count", "span_count"):
        return pl.col("id").filter(rows).len().cast(pl.Int64)
    if metric == "error_count":
        return is_error.sum().cast(pl.Int64)
    if metric == "error_rate":
        return is_error.mean()
    if metric == "success_rate":
        return 1 - is_error.mean()
    if metric == "unique_users":
        return pl.col("user_id").filter(rows).drop_nulls().n_unique().cast(pl.Int64)
    col = pl.col(_COLUMN[metric]).cast(pl.Float64).filter(rows)
    if agg in _PCT:
        return col.quantile(_PCT[agg], interpolation="linear")
    return {
        "count": col.count(),
        "sum": col.sum(),
        "avg": col.mean(),
        "min": col.min(),
        "max": col.max(),
        "stddev": col.std(ddof=1),
    }[agg]


def reference_metrics(
    df: pl.DataFrame,
    spec: FilterSpec,
    now: datetime,
    org_id: int,
    series: tuple[str, ...],
    group_by: tuple[str, ...],
    bucket_seconds: int | None,
    project_ids: frozenset[int] | None = None,
    zone: str = "UTC",
) -> pl.DataFrame:
    ids = reference_ids(df, spec, now, org_id)
    sub = df.filter(pl.col("id").is_in(list(ids)))
    llm_ids = reference_llm_calls(df)
    masks = {s: subject_mask(df, SUBJECTS[s.split(".")[0]], llm_ids) for s in series}
    # groups with no row of any series' subject are not in an answer
    sub = sub.filter(pl.any_horizontal(list(masks.values())))
    if project_ids is not None:
        sub = sub.filter(pl.col("project_id").is_in(list(project_ids)))
    if "duplicate_of" in sub.columns:  # a call sent twice counts once (docs/ingestion.md)
        sub = sub.filter(pl.col("duplicate_of").is_null())
    out, duration, ttft = pl.col("output_tokens"), pl.col("duration_ms"), pl.col("ttft_ms")
    produced = (out > 0) & (duration > 0)
    generating = ttft.is_not_null() & (ttft >= 0) & (ttft < duration)
    sub = sub.with_columns(
        # output tokens per second after the first token where its time is known and leaves
        # some, else over the whole call
        pl.when(produced & generating)
        .then(out * 1000.0 / (duration - ttft))
        .when(produced)
        .then(out * 1000.0 / duration)
        .alias("tps"),
        pl.col("project_id").alias("project"),
        pl.when(pl.col("llm_call")).then(pl.lit("yes")).otherwise(pl.lit("no")).alias("llm_call"),
    )
    keys = list(group_by)
    if bucket_seconds:
        sub = sub.with_columns(bucket_column("start_time", bucket_seconds, zone))
        keys = ["bucket", *keys]
    aggs = [_expr(s, masks[s]).alias(s) for s in series]
    if not keys:
        return sub.select(aggs)
    return sub.group_by(keys).agg(aggs)


_EVERY = {60: "1m", 300: "5m", 3600: "1h", 86_400: "1d", 604_800: "1w"}


def bucket_column(column: str, bucket_seconds: int, zone: str = "UTC") -> pl.Expr:
    """The bucket of each row, as the issue words it: the time converted to the zone, then
    truncated (days and Monday weeks of the zone's calendar), as a UTC instant."""
    local = pl.col(column).cast(pl.Datetime("us", "UTC")).dt.convert_time_zone(zone)
    return local.dt.truncate(_EVERY[bucket_seconds]).dt.convert_time_zone("UTC").alias("bucket")


def _trace_expr(name: str) -> pl.Expr:
    metric, agg = name.split(".")
    if metric == "trace_count":
        return pl.len().cast(pl.Int64)
    if metric == "trace_error_rate":
        return (pl.col("error_count") > 0).cast(pl.Float64).mean()
    col = pl.col(
        {"trace_duration_ms": "duration_ms", "trace_cost": "cost", "trace_tokens": "tokens"}[metric]
    ).cast(pl.Float64)
    if agg in _PCT:
        return col.quantile(_PCT[agg], interpolation="linear")
    return {
        "count": col.count(),
        "sum": col.sum(),
        "avg": col.mean(),
        "min": col.min(),
        "max": col.max(),
        "stddev": col.std(ddof=1),
    }[agg]


def reference_trace_metrics(
    df: pl.DataFrame,
    spec: FilterSpec,
    now: datetime,
    org_id: int,
    series: tuple[str, ...],
    group_by: tuple[str, ...],
    bucket_seconds: int | None,
    project_ids: frozenset[int] | None = None,
    zone: str = "UTC",
) -> pl.DataFrame:
    """Trace metrics (docs/metrics.md, "Trace metrics"): the spans the scope sees grouped by
    trace; a trace counts when one of its spans matches the filters (time aside) and its first
    span starts in the window; groups are the root span's values (project: the lowest project
    when no root is visible)."""
    start, end = spec.window(now)
    seen = df.filter(pl.col("org_id") == org_id)
    if project_ids is not None:
        seen = seen.filter(pl.col("project_id").is_in(list(project_ids)))
    matching = reference_ids(df, spec.replace(relative=None, start=None, end=None), now, org_id)
    traces = seen.filter(pl.col("id").is_in(list(matching)))["trace_id"].unique()
    root = pl.col("parent_span_id").is_null()
    dims = [
        "project_id" if d == "project" else d for d in group_by
    ]  # the span column of each group-by
    per = (
        seen.filter(pl.col("trace_id").is_in(traces.to_list()))
        .group_by("trace_id")
        .agg(
            pl.col("start_time").min().alias("first_start"),
            (
                (pl.col("end_time").max() - pl.col("start_time").min()).dt.total_microseconds()
                / 1000
            ).alias("duration_ms"),
            (pl.col("status") == "error").sum().alias("error_count"),
            pl.col("total_cost_usd").sum().alias("cost"),
            pl.col("total_tokens").sum().alias("tokens"),
            *(
                (
                    pl.coalesce(pl.col(c).filter(root).max(), pl.col(c).min())
                    if d == "project"
                    else pl.col(c).filter(root).max()
                ).alias(d)
                for c, d in zip(dims, group_by, strict=True)
            ),
        )
        .filter((pl.col("first_start") >= start) & (pl.col("first_start") < end))
    )
    keys = list(group_by)
    if bucket_seconds:
        per = per.with_columns(bucket_column("first_start", bucket_seconds, zone))
        keys = ["bucket", *keys]
    aggs = [_trace_expr(s).alias(s) for s in series]
    if not keys:
        return per.select(aggs)
    return per.group_by(keys).agg(aggs)
