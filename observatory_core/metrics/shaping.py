"""The answer's shape once the numbers are in: every bucket of the range (`complete`, for
charts) or only those holding data (`present`, the API's default), stable column types, and
having, sort and limit (docs/metrics.md)."""

from __future__ import annotations

import operator

import polars as pl

from observatory_core.base.zones import Bucketing
from observatory_core.metrics.catalog import ZERO_WHEN_EMPTY, Agg
from observatory_core.metrics.query import MetricQuery

_OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
    "!=": operator.ne,
}


def complete(frame: pl.DataFrame, result_series, group_by, buckets: Bucketing) -> pl.DataFrame:
    """Every bucket of the range for every group seen: zero for counts and sums, else a gap."""
    starts = pl.Series("bucket", buckets.edges[:-1], dtype=pl.Int64)  # microseconds, UTC
    grid = starts.cast(pl.Datetime("us", "UTC")).to_frame()
    if group_by:
        groups = frame.select(group_by).unique().sort(group_by)
        if groups.height == 0:
            return frame.clear()
        # in bucket, then group order as built: no sort of the whole answer afterwards
        grid = grid.join(groups, how="cross", maintain_order="left_right")
    if frame.height:
        frame = frame.with_columns(pl.col("bucket").cast(pl.Datetime("us", "UTC")))
        full = grid.join(
            frame, on=["bucket", *group_by], how="left", nulls_equal=True, maintain_order="left"
        )
    else:
        full = grid.with_columns(*(pl.lit(None).alias(s) for s in result_series))
    fills = [
        pl.col(s).fill_null(0) for s in result_series if Agg(s.split(".")[1]) in ZERO_WHEN_EMPTY
    ]
    return full.with_columns(fills) if fills else full


def present(frame: pl.DataFrame, result_series, group_by, buckets: Bucketing) -> pl.DataFrame:
    """The buckets that hold data, in the order `complete` gives them (bucket, then group):
    zero for an empty count or sum of a row another series filled, else a gap."""
    if not frame.height:
        return frame.with_columns(pl.col("bucket").cast(pl.Datetime("us", "UTC")))
    fills = [
        pl.col(s).fill_null(0) for s in result_series if Agg(s.split(".")[1]) in ZERO_WHEN_EMPTY
    ]
    frame = frame.with_columns(pl.col("bucket").cast(pl.Datetime("us", "UTC")), *fills)
    return frame.sort(["bucket", *group_by], maintain_order=True)


def typed(frame: pl.DataFrame, series: tuple[str, ...], group_by: tuple[str, ...]) -> pl.DataFrame:
    """Stable column types (also for an empty result), and zero for empty counts and sums."""
    casts = [pl.col(g).cast(pl.Int64 if g == "project" else pl.Utf8) for g in group_by]
    if "bucket" in frame.columns:
        casts.append(pl.col("bucket").cast(pl.Datetime("us", "UTC")))
    for s in series:
        metric, agg = s.split(".")
        integral = agg == Agg.COUNT
        column = pl.col(s).cast(pl.Int64 if integral else pl.Float64)
        casts.append(column.fill_null(0) if Agg(agg) in ZERO_WHEN_EMPTY else column)
    return frame.with_columns(casts)


def keep_rows(frame: pl.DataFrame, query: MetricQuery) -> pl.DataFrame:
    """having, then sort, then limit, on one row per group (or per row for totals)."""
    for h in query.having:
        frame = frame.filter(_OPS[h.op](pl.col(h.series), h.value))
    key = query.sort or query.series[0]
    # ties by the groups' own values, so every store keeps (and folds) the same groups
    ties = [g for g in query.group_by if g in frame.columns and g != key]
    frame = frame.sort(
        [key, *ties], descending=[query.descending] + [False] * len(ties), nulls_last=True
    )
    return frame.head(query.limit) if query.limit else frame
