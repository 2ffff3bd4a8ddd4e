"""The managers' Overview: a period against the one before it, top spenders, errors, budget.

Everything comes from rollups where the range allows (raw spans for ragged edges): totals,
means, standard deviations and the latency sketch from the metric rollups, distinct users and
sessions from the actor rollups.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import polars as pl
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.accounts.visibility import metric_visible, require_filters
from observatory_core.base import zones
from observatory_core.base.errors import UserError
from observatory_core.base.zones import UTC_ZONE, Zone
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS
from observatory_core.metrics.engine import MetricResult, run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.metrics.totals import run_metric_totals
from observatory_core.metrics.trace_path import totals_can_answer, trace_counts
from observatory_core.reports import significance as sig
from observatory_core.reports.summary import percent_change
from observatory_core.rollups.actors import ACTOR_FILTERS, distinct_actors, period_actors
from observatory_core.semantic.duplicates import counted
from observatory_core.semantic.metrics import subject_condition
from observatory_core.storage import latency_bins as sketch
from observatory_core.storage.schema import org_budgets, spans
from observatory_core.storage.stores import store_for

_KPI_SERIES = (
    "request_count.count",
    "error_count.count",
    "total_cost.sum",
    "total_cost.avg",
    "total_cost.stddev",
    "total_tokens.sum",
    "total_tokens.avg",
    "total_tokens.stddev",
    "duration_ms.avg",
    "duration_ms.stddev",
    "duration_ms.p95",
)
# Traces are their own subject (one query; docs/metrics.md, "Trace metrics"): the tile beside
# Requests counts the traces begun in each period.
_TRACE_SERIES = ("trace_count.count",)


@dataclass(frozen=True)
class Kpi:
    key: str
    label: str
    unit: str  # count, usd, tokens, ms, ratio
    current: float | None
    previous: float | None
    verdict: sig.Verdict
    higher_is_better: bool = True

    @property
    def change_pct(self) -> float | None:
        return percent_change(self.current, self.previous)


@dataclass(frozen=True)
class Overview:
    start: datetime
    end: datetime
    kpis: list[Kpi]
    source: str  # how the period totals were computed (rollup or raw, with the percentile note)


def _slower_than(
    engine: Engine, scope: Scope, result: MetricResult, spec: FilterSpec, now: datetime, ms: float
) -> int:
    """Requests slower than `ms`: from the merged sketch when the result has one (`ms` is then
    a bin edge, so the count is exact), else counted on the spans."""
    if result.sketch is not None:
        return int(result.sketch[sketch.bin_of(ms) + 1 :].sum())
    query = scoped_spans(scope, func.count()).where(
        *filter_conditions(spec, now, store_for(engine).name),
        spans.c.duration_ms > ms,
        counted(spans.c),
    )
    rows = subject_condition(METRICS["duration_ms"].subject, spans.c)  # the latency's rows
    if rows is not None:
        query = query.where(rows)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def period_overview(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    now: datetime | None = None,
    force: str | None = None,
    zone: Zone = UTC_ZONE,
) -> Overview:
    """KPIs for the period of `spec` against the previous period of equal length (a calendar
    period such as today is the caller's, found on `zone`'s clock: `base.zones.calendar_period`).
    `engine` is the one spans and rollups are read from (the span store's when it is set:
    `storage/span_reads.py`)."""
    now = now or datetime.now(UTC)
    scope.require(Permission.METRICS_READ)
    if spec.window(now)[0] is None:
        raise UserError("The Overview compares two periods; pick a time range, not all time.")
    costs = metric_visible(scope, "total_cost")  # the cost tile only for roles that see costs
    series = tuple(s for s in _KPI_SERIES if metric_visible(scope, s.split(".")[0]))
    current = MetricQuery(series=series, filters=spec.pinned(now), bucket=None, zone=zone)
    previous = current.previous(now)
    start, end = current.filters.window(now)
    if start is not None and end is not None and start < now < end:
        # A period not over yet (this month, from its first day to its last) holds only what
        # has passed: weighed against a whole previous period it would read as a fall. Both
        # sides are cut at the same point: so far, against the same part of the one before.
        length = end - start
        current = replace(current, filters=current.filters.replace(end=now))
        previous = replace(
            current, filters=current.filters.replace(start=start - length, end=now - length)
        )
    both = None if force else run_metric_totals(engine, scope, [current, previous], now=now)
    a, b = both or (
        run_metrics(engine, scope, q, now=now, force=force) for q in (current, previous)
    )
    ra, rb = a.frame.to_dicts()[0], b.frame.to_dicts()[0]
    # the traces of the same two periods as the other tiles (a period not over: so far, against
    # the same part before, not the stretch just before its start)
    periods = [
        MetricQuery(series=_TRACE_SERIES, filters=q.filters, bucket=None)
        for q in (current, previous)
    ]
    trace_force = force if force == "raw" else None  # trace_totals know time and project only
    # both periods in one statement (docs/span-store-internals.md, "Reports and alerts")
    pairs = store_for(engine).pairs_periods
    trace_specs = [q.filters.pinned(now) for q in periods]
    if pairs and trace_force is None and totals_can_answer((), trace_specs[0]):
        windows = [s.window(now) for s in trace_specs]
        ta, tb = trace_counts(engine, scope, trace_specs[0], windows)  # type: ignore[arg-type]
    else:
        ta, tb = (
            run_metrics(engine, scope, q, now=now, force=trace_force)
            .frame["trace_count.count"]
            .item()
            for q in periods
        )
    na, nb = ra["request_count.count"], rb["request_count.count"]
    ea, eb = ra["error_count.count"], rb["error_count.count"]
    start, end = current.filters.window(now)
    before_start, before_end = previous.filters.window(now)
    if pairs and current.filters.only_uses(ACTOR_FILTERS):
        windows = [(start, end), (before_start, before_end)]
        actors_a, actors_b = period_actors(
            engine,
            scope,
            windows,
            spec=current.filters,
            force=force,  # type: ignore[arg-type]
        )
    else:
        actors_a = distinct_actors(
            engine, scope, start, end, spec=current.filters, now=now, force=force
        )
        actors_b = distinct_actors(
            engine, scope, before_start, before_end, spec=previous.filters, now=now, force=force
        )
    # Both periods' share above one threshold: sound even when the p95 is approximate. With
    # a sketch the threshold is the upper edge of the previous p95's bin.
    p95_before = rb["duration_ms.p95"]
    slower_a = slower_b = 0
    if p95_before is not None:
        edge = sketch.upper_edge(sketch.bin_of(p95_before)) if b.sketch is not None else p95_before
        slower_a = _slower_than(engine, scope, a, current.filters, now, edge)
        slower_b = _slower_than(engine, scope, b, previous.filters, now, edge)

    def rate(errors: int, n: int) -> float | None:
        return errors / n if n else None

    def total(metric: str) -> sig.Verdict:
        return sig.totals(
            ra[f"{metric}.sum"],
            sig.sumsq(ra, metric, na),
            na,
            rb[f"{metric}.sum"],
            sig.sumsq(rb, metric, nb),
            nb,
        )

    kpis = [
        Kpi("requests", "Requests", "count", na, nb, sig.counts(na, nb)),
        Kpi("traces", "Traces", "count", ta, tb, sig.counts(ta, tb)),
        Kpi(
            "tokens",
            "Tokens",
            "tokens",
            ra["total_tokens.sum"],
            rb["total_tokens.sum"],
            total("total_tokens"),
        ),
        Kpi(
            "avg_latency",
            "Average latency",
            "ms",
            ra["duration_ms.avg"],
            rb["duration_ms.avg"],
            sig.means(
                (ra["duration_ms.avg"] or 0) * na,
                sig.sumsq(ra, "duration_ms", na),
                na,
                (rb["duration_ms.avg"] or 0) * nb,
                sig.sumsq(rb, "duration_ms", nb),
                nb,
            ),
            higher_is_better=False,
        ),
        Kpi(
            "p95_latency",
            "p95 latency",
            "ms",
            ra["duration_ms.p95"],
            p95_before,
            sig.proportions(slower_a, na, slower_b, nb) if p95_before is not None else sig.NONE,
            higher_is_better=False,
        ),
        Kpi(
            "error_rate",
            "Error rate",
            "ratio",
            rate(ea, na),
            rate(eb, nb),
            sig.proportions(ea, na, eb, nb),
            higher_is_better=False,
        ),
        Kpi(
            "success_rate",
            "Success rate",
            "ratio",
            1 - rate(ea, na) if na else None,
            1 - rate(eb, nb) if nb else None,
            sig.proportions(na - ea, na, nb - eb, nb),
        ),
        Kpi(
            "users",
            "Unique users",
            "count",
            actors_a["user"],
            actors_b["user"],
            sig.counts(actors_a["user"], actors_b["user"]),
        ),
        Kpi(
            "sessions",
            "Unique sessions",
            "count",
            actors_a["session"],
            actors_b["session"],
            sig.counts(actors_a["session"], actors_b["session"]),
        ),
    ]
    if costs:
        kpis.insert(
            2,  # after Requests and Traces
            Kpi(
                "cost",
                "Cost (USD)",
                "usd",
                ra["total_cost.sum"],
                rb["total_cost.sum"],
                total("total_cost"),
                higher_is_better=False,
            ),
        )
    kpis = [
        replace(k, verdict=sig.unless_unchanged(k.verdict, k.current, k.previous)) for k in kpis
    ]
    return Overview(start=start, end=end, kpis=kpis, source=a.explanation)


TOP_BY = {
    "cost": "total_cost.sum",
    "requests": "request_count.count",
    "duration": "duration_ms.sum",
    "errors": "error_count.count",
}


def top(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    dimension: str,
    by: str,
    *,
    limit: int = 10,
    now: datetime | None = None,
) -> MetricResult:
    """The top `limit` models, users or projects of the period by cost, requests, duration or errors."""
    if by not in TOP_BY:
        raise UserError(f"Rank by one of {', '.join(TOP_BY)}, not {by!r}.")
    series = tuple(dict.fromkeys((TOP_BY[by], "request_count.count", "error_count.count")))
    query = MetricQuery(
        series=series,
        filters=spec,
        bucket=None,
        group_by=(dimension,),
        sort=TOP_BY[by],
        limit=limit,
    )
    return run_metrics(engine, scope, query, now=now)


def cost_per_day_by_model(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    now: datetime | None = None,
    zone: Zone = UTC_ZONE,
) -> MetricResult:
    """Cost per day of `zone`'s calendar, by model."""
    query = MetricQuery(
        series=("total_cost.sum",), filters=spec, bucket="1day", group_by=("model",), zone=zone
    )
    return run_metrics(engine, scope, query, now=now)


def common_errors(
    engine: Engine, scope: Scope, spec: FilterSpec, *, limit: int = 10, now: datetime | None = None
) -> pl.DataFrame:
    """The most frequent error types with a sample message and the last time each was seen."""
    scope.require(Permission.METRICS_READ)
    require_filters(scope, spec)
    now = now or datetime.now(UTC)
    c = spans.c
    kind = func.coalesce(c.error_type, "(no error type)")
    query = (
        scoped_spans(
            scope,
            kind.label("error_type"),
            func.count().label("count"),
            func.max(c.error_message).label("sample_message"),
            func.max(c.start_time).label("last_seen"),
        )
        .where(
            *filter_conditions(spec, now, store_for(engine).name),
            c.status == "error",
            counted(c),
        )
        .group_by(kind)
        .order_by(func.count().desc(), kind)
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    schema = {
        "error_type": pl.Utf8,
        "count": pl.Int64,
        "sample_message": pl.Utf8,
        "last_seen": pl.Datetime("us", "UTC"),
    }
    return pl.DataFrame([dict(r) for r in rows], schema=schema)


@dataclass(frozen=True)
class BudgetBurn:
    budget_usd: float | None
    month_start: datetime
    spent_usd: float
    # spent so far plus, for the time left, the rate so far: spent over the time elapsed
    # (today counts for the hours that have passed, never as a whole day)
    forecast_usd: float
    daily: pl.DataFrame  # day, cost, cumulative
    partial_days: dict[datetime, float] = field(default_factory=dict)  # today: seconds passed
    month_end: datetime | None = None  # the next month's start, on the same clock
    zone: Zone = UTC_ZONE  # whose calendar the month and its days are

    @property
    def forecast_share(self) -> float | None:
        return self.forecast_usd / self.budget_usd if self.budget_usd else None


def get_budget(engine: Engine, scope: Scope) -> float | None:
    with engine.connect() as conn:
        return conn.execute(
            select(org_budgets.c.monthly_usd).where(org_budgets.c.org_id == scope.org_id)
        ).scalar()


def set_budget(engine: Engine, scope: Scope, monthly_usd: float) -> None:
    """Admins set the org's monthly budget (a positive number of dollars)."""
    scope.require(Permission.ADMIN)
    if (
        isinstance(monthly_usd, bool)
        or not isinstance(monthly_usd, int | float)
        or not (0 < monthly_usd < 1e12)
    ):
        raise UserError("The monthly budget must be a positive number of US dollars.")
    from observatory_core.accounts.audit import record_for
    from observatory_core.storage.dialect import upsert

    with engine.begin() as conn:
        before = conn.execute(
            select(org_budgets.c.monthly_usd).where(org_budgets.c.org_id == scope.org_id)
        ).scalar()
        record_for(
            conn,
            scope,
            "budget.set",
            "monthly budget",
            before={"monthly_usd": before},
            after={"monthly_usd": float(monthly_usd)},
        )
        stmt = upsert(conn, org_budgets).values(
            org_id=scope.org_id,
            monthly_usd=float(monthly_usd),
            updated_by=scope.username,
            updated_at=datetime.now(UTC),
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[org_budgets.c.org_id],
                set_={
                    "monthly_usd": stmt.excluded.monthly_usd,
                    "updated_by": stmt.excluded.updated_by,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
        )


def budget_burn(
    engine: Engine,
    scope: Scope,
    *,
    now: datetime | None = None,
    zone: Zone = UTC_ZONE,
    spans: Engine | None = None,
) -> BudgetBurn:
    """The month so far (of `zone`'s calendar: a New York reader's month starts at their
    midnight), by day, and its forecast at the rate so far. The budget is read from `engine`
    (DATABASE_URL's), the costs from `spans` (the span store's when it is set), else `engine`."""
    scope.require(Permission.COSTS_READ)
    now = now or datetime.now(UTC)
    month_start = zones.month_start(zone, now)
    next_month = zones.next_month_start(zone, now)
    spec = FilterSpec(relative=None, start=month_start, end=now)
    query = MetricQuery(series=("total_cost.sum",), filters=spec, bucket="1day", zone=zone)
    result = run_metrics(spans or engine, scope, query, now=now)
    frame = result.frame.rename({"bucket": "day", "total_cost.sum": "cost"})
    frame = frame.with_columns(pl.col("cost").cum_sum().alias("cumulative"))
    spent = float(frame["cost"].sum())
    elapsed_days = (now - month_start) / timedelta(days=1)
    days_left = (next_month - now) / timedelta(days=1)
    forecast = spent + (spent / elapsed_days * days_left if elapsed_days > 0 else 0.0)
    return BudgetBurn(
        get_budget(engine, scope),
        month_start,
        spent,
        forecast,
        frame,
        result.partial_buckets,
        next_month,
        zone,
    )
