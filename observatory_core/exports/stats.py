"""Export statistics for admins: success rate, durations, volume, formats, active users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.base.zones import UTC_ZONE, Zone
from observatory_core.exports.jobs import scoped_jobs
from observatory_core.storage.schema import export_jobs

FAILURE_WARNING = 0.10
SIZE_BUCKETS = [(10_000, "< 10k rows"), (100_000, "10k-100k rows"), (1_000_000, "100k-1M rows")]


@dataclass(frozen=True)
class ExportStats:
    jobs: int
    success_rate: float | None  # completed (incl. later expired) / finished
    last_hour_failure_rate: float | None
    warning: str | None
    durations: pl.DataFrame  # format, size bucket, jobs, median_s, p95_s
    volume: pl.DataFrame  # day, jobs, rows, bytes
    formats: pl.DataFrame  # format, compression, jobs
    users: pl.DataFrame  # created_by, jobs, rows


_UTC = pl.Datetime("us", "UTC")
SCHEMA = {
    "status": pl.String,
    "format": pl.String,
    "compression": pl.String,
    "created_by": pl.String,
    "rows_written": pl.Int64,
    "file_size": pl.Int64,
    "created_at": _UTC,
    "started_at": _UTC,
    "finished_at": _UTC,
}


def _size_bucket() -> pl.Expr:
    rows = pl.col("rows_written")
    expr = pl.lit(">= 1M rows")
    for limit, label in reversed(SIZE_BUCKETS):
        expr = pl.when(rows < limit).then(pl.lit(label)).otherwise(expr)
    return expr


def export_stats(
    engine: Engine,
    scope: Scope,
    *,
    days: int = 30,
    now: datetime | None = None,
    zone: Zone = UTC_ZONE,
) -> ExportStats:
    """The org's exports of the last `days`: success, failures, durations, and the volume per
    day of `zone`'s calendar (the reader's)."""
    scope.require(Permission.ADMIN)
    now = now or datetime.now(UTC)
    query = scoped_jobs(scope).where(export_jobs.c.created_at >= now - timedelta(days=days))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    # Fixed types: a column that is all null so far (say started_at while every job is
    # pending) must still be a timestamp.
    frame = pl.DataFrame([{k: r[k] for k in SCHEMA} for r in rows], schema=SCHEMA)
    good = pl.col("status").is_in(["completed", "expired"])
    finished = frame.filter(pl.col("status").is_in(["completed", "expired", "failed"]))
    success = finished.filter(good).height / finished.height if finished.height else None
    hour = finished.filter(pl.col("finished_at") >= now - timedelta(hours=1))
    failure = (
        hour.filter(pl.col("status") == "failed").height / hour.height if hour.height else None
    )
    warning = None
    if failure is not None and failure > FAILURE_WARNING:
        warning = f"{failure:.0%} of exports failed in the last hour (over {FAILURE_WARNING:.0%}); read their error messages."
    done = frame.filter(good).with_columns(
        seconds=(pl.col("finished_at") - pl.col("started_at")).dt.total_milliseconds() / 1000,
        size=_size_bucket(),
    )
    durations = (
        done.group_by("format", "size")
        .agg(
            pl.len().alias("jobs"),
            pl.col("seconds").median().alias("median_s"),
            pl.col("seconds").quantile(0.95, "linear").alias("p95_s"),
        )
        .sort("format", "size")
    )
    volume = (
        frame.group_by(day=pl.col("created_at").dt.convert_time_zone(zone.name).dt.date())
        .agg(
            pl.len().alias("jobs"),
            pl.col("rows_written").sum().alias("rows"),
            pl.col("file_size").fill_null(0).sum().alias("bytes"),
        )
        .sort("day")
    )
    formats = (
        frame.group_by("format", "compression")
        .agg(pl.len().alias("jobs"))
        .sort("jobs", descending=True)
    )
    users = (
        frame.group_by("created_by")
        .agg(pl.len().alias("jobs"), pl.col("rows_written").sum().alias("rows"))
        .sort("jobs", descending=True)
        .head(10)
    )
    return ExportStats(frame.height, success, failure, warning, durations, volume, formats, users)
