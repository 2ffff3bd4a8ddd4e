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
    **dict.fromkeys(("unique_users", "trace_count", "span_count", "quality_score"), "spans"),
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
    if metric == "trace_count":
        return pl.col("trace_id").filter(rows).n_unique().cast(pl.Int64)
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
) -> pl.DataFrame:
    ids = reference_ids(df, spec, now, org_id)
    sub = df.filter(pl.col("id").is_in(list(ids)))
    llm_ids = reference_llm_calls(df)
    masks = {s: subject_mask(df, SUBJECTS[s.split(".")[0]], llm_ids) for s in series}
    # groups with no row of any series' subject are not in an answer
    sub = sub.filter(pl.any_horizontal(list(masks.values())))
    if project_ids is not None:
        sub = sub.filter(pl.col("project_id").is_in(list(project_ids)))
    sub = sub.with_columns(
        pl.when((pl.col("output_tokens") > 0) & (pl.col("duration_ms") > 0))
        .then(pl.col("output_tokens") * 1000.0 / pl.col("duration_ms"))
        .alias("tps"),
        pl.col("project_id").alias("project"),
        pl.when(pl.col("llm_call")).then(pl.lit("yes")).otherwise(pl.lit("no")).alias("llm_call"),
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
    aggs = [_expr(s, masks[s]).alias(s) for s in series]
    if not keys:
        return sub.select(aggs)
    return sub.group_by(keys).agg(aggs)
