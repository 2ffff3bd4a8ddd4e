"""The independent reference for metrics: polars over the raw rows."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from observatory_core.filters.spec import FilterSpec
from tests.reference import reference_ids

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


def _expr(name: str) -> pl.Expr:
    metric, agg = name.split(".")
    is_error = (pl.col("status") == "error").cast(pl.Float64)
    if metric == "request_count":
        return pl.len().cast(pl.Int64)
    if metric == "error_count":
        return is_error.sum().cast(pl.Int64)
    if metric == "error_rate":
        return is_error.mean()
    if metric == "success_rate":
        return 1 - is_error.mean()
    if metric == "unique_users":
        return pl.col("user_id").drop_nulls().n_unique().cast(pl.Int64)
    if metric == "trace_count":
        return pl.col("trace_id").n_unique().cast(pl.Int64)
    col = pl.col(_COLUMN[metric]).cast(pl.Float64)
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
) -> pl.DataFrame:
    ids = reference_ids(df, spec, now, org_id)
    sub = df.filter(pl.col("id").is_in(list(ids)))
    if project_ids is not None:
        sub = sub.filter(pl.col("project_id").is_in(list(project_ids)))
    if "duplicate_of" in sub.columns:  # a call sent twice counts once (docs/ingestion.md)
        sub = sub.filter(pl.col("duplicate_of").is_null())
    sub = sub.with_columns(
        pl.when((pl.col("output_tokens") > 0) & (pl.col("duration_ms") > 0))
        .then(pl.col("output_tokens") * 1000.0 / pl.col("duration_ms"))
        .alias("tps"),
        pl.col("project_id").alias("project"),
    )
    keys = list(group_by)
    if bucket_seconds:
        width = bucket_seconds * 1_000_000
        sub = sub.with_columns(
            ((pl.col("start_time").dt.epoch("us") // width) * width)
            .cast(pl.Datetime("us", "UTC"))
            .alias("bucket")
        )
        keys = ["bucket", *keys]
    aggs = [_expr(s).alias(s) for s in series]
    if not keys:
        return sub.select(aggs)
    return sub.group_by(keys).agg(aggs)
