"""The at-a-glance numbers of the home page: a window against the window before it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, func
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.accounts.visibility import can_see
from observatory_core.storage.dialect import percentile_cont, time_bucket
from observatory_core.storage.schema import spans


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


def percent_change(now: float | None, before: float | None) -> float | None:
    """Change in percent; None when there is nothing to compare against."""
    if now is None or before is None or before == 0:
        return None
    return (now - before) / before * 100.0


def period_stats(engine: Engine, scope: Scope, start: datetime, end: datetime) -> PeriodStats:
    scope.require(Permission.METRICS_READ)
    query = scoped_spans(
        scope,
        func.count(),
        func.count(spans.c.trace_id.distinct()),
        func.coalesce(func.sum(case((spans.c.status == "error", 1), else_=0)), 0),
        func.coalesce(func.sum(spans.c.total_cost_usd), 0.0),
        percentile_cont(spans.c.duration_ms, 0.95),
    ).where(spans.c.start_time >= start, spans.c.start_time < end)
    with engine.connect() as conn:
        requests, traces, errors, cost, p95 = conn.execute(query).one()
    return PeriodStats(
        start=start,
        end=end,
        requests=int(requests),
        traces=int(traces),
        errors=int(errors),
        cost_usd=float(cost) if can_see(scope, "total_cost_usd") else None,
        p95_ms=float(p95) if p95 is not None else None,
    )


def requests_per_hour(
    engine: Engine, scope: Scope, start: datetime, end: datetime
) -> list[tuple[datetime, int]]:
    """Span counts per hour, every hour present (zero where nothing ran)."""
    scope.require(Permission.METRICS_READ)
    bucket = time_bucket(spans.c.start_time, 3600).label("bucket")
    query = (
        scoped_spans(scope, bucket, func.count())
        .where(spans.c.start_time >= start, spans.c.start_time < end)
        .group_by(bucket)
    )
    with engine.connect() as conn:
        counts = {b: int(n) for b, n in conn.execute(query)}
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    series = []
    while hour < end:
        series.append((hour, counts.get(hour, 0)))
        hour += timedelta(hours=1)
    return series


def home_summary(
    engine: Engine, scope: Scope, *, now: datetime | None = None, hours: int = 24
) -> HomeSummary:
    now = now or datetime.now(UTC)
    window = timedelta(hours=hours)
    return HomeSummary(
        current=period_stats(engine, scope, now - window, now),
        previous=period_stats(engine, scope, now - 2 * window, now - window),
        per_hour=requests_per_hour(engine, scope, now - window, now),
    )
