"""The at-a-glance numbers of the home page: a window against the window before it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import metric_visible
from observatory_core.base.zones import UTC_ZONE, Bucketing, Zone
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.partial import partial_buckets
from observatory_core.metrics.query import MetricQuery


@dataclass(frozen=True)
class PeriodStats:
    start: datetime
    end: datetime
    requests: int
    traces: int
    errors: int
    cost_usd: float | None  # None when the scope may not see costs
    p95_ms: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class HomeSummary:
    current: PeriodStats
    previous: PeriodStats
    per_hour: list[tuple[datetime, int]]
    # hour -> seconds covered, for the first and the last hour, which the window cuts short
    partial_hours: dict[datetime, float] = field(default_factory=dict)


def percent_change(now: float | None, before: float | None) -> float | None:
    """Change in percent; None when there is nothing to compare against."""
    if now is None or before is None or before == 0:
        return None
    return (now - before) / before * 100.0


# Home's figures, through the metrics engine: the span figures in one query, the traces (their
# own subject: the traces begun in the period, docs/metrics.md) in another. The span query reads
# raw spans, so its p95 stays exact, as Home has always shown it (it used to share a query with
# the raw-only distinct trace count).
_PERIOD_SERIES = (
    "request_count.count",
    "error_count.count",
    "total_cost.sum",
    "duration_ms.p95",
)


def _window(start: datetime, end: datetime) -> FilterSpec:
    return FilterSpec(relative=None, start=start, end=end)


def period_stats(engine: Engine, scope: Scope, start: datetime, end: datetime) -> PeriodStats:
    """The window's figures from `engine`, the one spans and rollups are read from."""
    costs = metric_visible(scope, "total_cost")  # a viewer's figures leave the cost out
    series = tuple(s for s in _PERIOD_SERIES if costs or s != "total_cost.sum")
    query = MetricQuery(series=series, filters=_window(start, end), bucket=None)
    row = run_metrics(engine, scope, query, now=end, force="raw").frame.row(0, named=True)
    traces = MetricQuery(series=("trace_count.count",), filters=_window(start, end), bucket=None)
    row |= run_metrics(engine, scope, traces, now=end).frame.row(0, named=True)
    p95 = row["duration_ms.p95"]
    return PeriodStats(
        start=start,
        end=end,
        requests=int(row["request_count.count"]),
        traces=int(row["trace_count.count"]),
        errors=int(row["error_count.count"]),
        cost_usd=float(row["total_cost.sum"]) if costs else None,
        p95_ms=float(p95) if p95 is not None else None,
    )


def requests_per_hour(
    engine: Engine, scope: Scope, start: datetime, end: datetime, zone: Zone = UTC_ZONE
) -> list[tuple[datetime, int]]:
    """Requests per hour of `zone`'s clock (Kolkata's start at half past), every hour present
    (zero where nothing ran)."""
    query = MetricQuery(
        series=("request_count.count",), filters=_window(start, end), bucket="1hour", zone=zone
    )
    frame = run_metrics(engine, scope, query, now=end).frame
    return [
        (bucket.astimezone(UTC), int(n))
        for bucket, n in frame.select("bucket", "request_count.count").iter_rows()
    ]


def home_summary(
    engine: Engine,
    scope: Scope,
    *,
    now: datetime | None = None,
    hours: int = 24,
    zone: Zone = UTC_ZONE,
) -> HomeSummary:
    """Home's figures; `engine` is the one spans and rollups are read from (the span store's
    when it is set: `storage/span_reads.py`)."""
    now = now or datetime.now(UTC)
    window = timedelta(hours=hours)
    hourly = Bucketing.over(now - window, now, 3600, zone)
    return HomeSummary(
        current=period_stats(engine, scope, now - window, now),
        previous=period_stats(engine, scope, now - 2 * window, now - window),
        per_hour=requests_per_hour(engine, scope, now - window, now, zone),
        partial_hours=partial_buckets(now - window, now, now, 3600, bucketing=hourly),
    )
