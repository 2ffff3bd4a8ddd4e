"""`run_metrics`: plan (rollup or raw), run, complete the buckets, apply having/sort/limit.

Every result says where it came from and whether its percentiles are exact.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from sqlalchemy import func
from sqlalchemy.engine import Engine

from observatory_core.metrics import sketch
from observatory_core.metrics.catalog import PERCENTILES, ZERO_WHEN_EMPTY, Agg
from observatory_core.metrics.query import MetricError, MetricQuery
from observatory_core.metrics.raw import raw_select
from observatory_core.metrics.rollup_path import (
    finalize,
    rollup_can_answer,
    rollup_select,
)
from observatory_core.permissions import Permission
from observatory_core.scope import Scope, scoped_spans
from observatory_core.storage.schema import spans
from observatory_core.visibility import require_metric_query

_OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class MetricResult:
    frame: pl.DataFrame  # bucket (if bucketed), group-by columns, one column per series
    series: tuple[str, ...]
    group_by: tuple[str, ...]
    bucket_seconds: int | None
    start: datetime
    end: datetime
    source: str  # "raw" or "rollup"
    grains: tuple[str, ...]  # what the rollup path read (e.g. "1hour", "1min", "raw edges")
    exact_percentiles: bool | None  # None when no percentile was asked for
    seconds: float
    # a totals query from rollups: the merged latency bins (counts per sketch bin)
    sketch: np.ndarray | None = None

    @property
    def explanation(self) -> str:
        where = "raw spans" if self.source == "raw" else "rollups (" + ", ".join(self.grains) + ")"
        if self.exact_percentiles is None:
            return f"Computed from {where}; counts and sums are exact."
        if self.exact_percentiles:
            return f"Computed from {where}; percentiles are exact."
        return f"Computed from {where}; percentiles are approximate, {sketch.bound_text()}."


def _window(
    engine: Engine, scope: Scope, query: MetricQuery, now: datetime
) -> tuple[datetime, datetime]:
    start, end = query.filters.window(now)
    end = end or now
    if start is None:  # all time: from the first span the filter can see
        with engine.connect() as conn:
            first = conn.execute(scoped_spans(scope, func.min(spans.c.start_time))).scalar()
        start = first or end - timedelta(days=1)
    if start >= end:
        raise MetricError("The time range is empty; its start must come before its end.")
    return start, end


def _check_permissions(scope: Scope, query: MetricQuery) -> None:
    """Series, having, sort, group-bys and filters: nothing computed from a field the role
    may not see (a cost series for a viewer, a text search for billing) -- see `visibility`."""
    scope.require(Permission.METRICS_READ)
    require_metric_query(scope, query)


def _fetch(
    engine: Engine, statement, params: dict | None = None, *, by_index: bool = False
) -> pl.DataFrame:
    with engine.connect().execution_options(binary_results=True) as conn:
        if conn.dialect.name == "postgresql":
            # Merging rollup rows: with the default 4 MB the grouping of a 30-day hourly
            # series spilled to disk. `by_index`: read rollup rows through their (org, time)
            # index even when a range covers most of a table: a sequential scan of a table
            # over a quarter of shared_buffers goes through a small ring of buffers, so the
            # rows were read from the OS again on every query (+20-30 ms for 30 days of hours).
            conn.exec_driver_sql(
                "SELECT set_config('work_mem', '64MB', true), "
                f"set_config('enable_seqscan', '{'off' if by_index else 'on'}', true)"
            )
        result = conn.execute(statement, params or {})
        columns = list(result.keys())
        rows = result.all()
    if not rows:
        return pl.DataFrame(schema=columns)
    data = {
        name: list(values) for name, values in zip(columns, zip(*rows, strict=True), strict=True)
    }
    return pl.DataFrame(data, strict=False)


def _compute(
    engine: Engine,
    scope: Scope,
    query: MetricQuery,
    series: tuple[str, ...],
    bucket_seconds: int | None,
    start: datetime,
    end: datetime,
    now: datetime,
    force: str | None,
) -> tuple[pl.DataFrame, str, tuple[str, ...]]:
    spec = query.filters.pinned(now)
    dialect = engine.dialect.name
    use_rollup = force == "rollup" or (
        force is None and rollup_can_answer(series, query.group_by, spec)
    )
    if use_rollup:
        statement, grains, params = rollup_select(
            scope, series, query.group_by, spec, bucket_seconds, start, end
        )
        frame = _fetch(engine, statement, params, by_index=True)
        return finalize(frame, series, query.group_by, dialect), "rollup", tuple(grains)
    statement = raw_select(scope, series, query.group_by, spec, now, dialect, bucket_seconds)
    return _fetch(engine, statement), "raw", ()


def _complete(
    frame: pl.DataFrame, result_series, group_by, bucket_seconds, start, end
) -> pl.DataFrame:
    """Every bucket of the range for every group seen: zero for counts and sums, else a gap."""
    first = (start - timedelta(seconds=(start.timestamp() % bucket_seconds))).astimezone(UTC)
    buckets = pl.datetime_range(
        first, end, timedelta(seconds=bucket_seconds), closed="left", time_unit="us", eager=True
    )
    grid = pl.DataFrame({"bucket": buckets.dt.convert_time_zone("UTC")})
    if group_by:
        groups = frame.select(group_by).unique()
        if groups.height == 0:
            return frame.clear()
        grid = grid.join(groups, how="cross")
    if frame.height:
        frame = frame.with_columns(pl.col("bucket").cast(pl.Datetime("us", "UTC")))
        full = grid.join(frame, on=["bucket", *group_by], how="left", nulls_equal=True)
    else:
        full = grid.with_columns(*(pl.lit(None).alias(s) for s in result_series))
    fills = [
        pl.col(s).fill_null(0) for s in result_series if Agg(s.split(".")[1]) in ZERO_WHEN_EMPTY
    ]
    return (
        full.with_columns(fills).sort(["bucket", *group_by])
        if fills
        else full.sort(["bucket", *group_by])
    )


def _typed(frame: pl.DataFrame, series: tuple[str, ...], group_by: tuple[str, ...]) -> pl.DataFrame:
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


def _keep(frame: pl.DataFrame, query: MetricQuery) -> pl.DataFrame:
    """having, then sort, then limit, on one row per group (or per row for totals)."""
    for h in query.having:
        frame = frame.filter(_OPS[h.op](pl.col(h.series), h.value))
    key = query.sort or query.series[0]
    frame = frame.sort(key, descending=query.descending, nulls_last=True)
    return frame.head(query.limit) if query.limit else frame


def run_metrics(
    engine: Engine,
    scope: Scope,
    query: MetricQuery,
    *,
    now: datetime | None = None,
    force: str | None = None,
) -> MetricResult:
    """The series of `query` for the scope. `force` ("raw" or "rollup") is for tests and benchmarks."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    series = query.all_series
    _check_permissions(scope, query)
    start, end = _window(engine, scope, query, now)
    bucket_seconds = query.bucket_seconds(start, end)
    frame, source, grains = _compute(
        engine, scope, query, series, bucket_seconds, start, end, now, force
    )
    frame = _typed(frame, series, query.group_by)
    if bucket_seconds is None:
        frame = _keep(frame, query)
    else:
        if query.group_by and (query.having or query.limit or query.sort):
            totals, *_ = _compute(engine, scope, query, series, None, start, end, now, force)
            kept = _keep(totals, query).select(query.group_by)
            frame = frame.join(kept, on=list(query.group_by), how="semi", nulls_equal=True)
        frame = _complete(frame, series, query.group_by, bucket_seconds, start, end)
    sketch = None
    if "_bins" in frame.columns and bucket_seconds is None and not query.group_by:
        sketch = frame["_bins"].to_numpy()[0]
    wanted = [c for c in ("bucket", *query.group_by) if c in frame.columns] + list(query.series)
    frame = frame.select(wanted)
    has_percentiles = any(Agg(s.split(".")[1]) in PERCENTILES for s in query.series)
    return MetricResult(
        frame=frame,
        series=query.series,
        group_by=query.group_by,
        bucket_seconds=bucket_seconds,
        start=start,
        end=end,
        source=source,
        grains=grains,
        exact_percentiles=(source == "raw") if has_percentiles else None,
        seconds=time.perf_counter() - started,
        sketch=sketch,
    )
