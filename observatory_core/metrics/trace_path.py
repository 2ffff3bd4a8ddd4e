"""Metrics over traces (subject TRACES): one row per trace, its whole tree, then aggregated per
bucket and group like span metrics (docs/metrics.md, "Trace metrics").

What a trace metric counts:
- a trace is the spans of one trace id that the caller's scope can see (org and projects);
- it falls in the bucket, and in the time range, of its first start;
- a filter picks the traces containing a span that matches it; the figures are over the tree;
- a group-by reads the trace's root span (the span without a parent); `project` falls back to
  the trace's lowest project id while no root has arrived, so every trace has a project.

The per-trace rows (`semantic.metrics.TRACE_COLUMNS`) come from the spans grouped by trace (any
filter, any group-by), or from the maintained `trace_totals` (one row per trace and project)
when the filter uses only time and project and the group-by only project: the same figures,
without reading the spans.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CompoundSelect,
    Select,
    and_,
    case,
    func,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.engine import Engine
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.accounts.scope import Scope, span_conditions
from observatory_core.base.zones import Bucketing
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS, Agg, Subject
from observatory_core.metrics.folding import folded_columns
from observatory_core.metrics.query import MetricError
from observatory_core.metrics.raw import declared_aggregate
from observatory_core.semantic.duplicates import counted
from observatory_core.semantic.field_lookups import by_group
from observatory_core.storage.clickhouse.trace_totals import partial_rows
from observatory_core.storage.dialect import bucket_of, epoch_us, time_bucket
from observatory_core.storage.schema import is_shared, spans, trace_totals
from observatory_core.storage.stores import store_for

# What `trace_totals` can answer: the time window plus these filters and group-bys.
TOTALS_FILTERS = frozenset({"project_ids"})
TOTALS_GROUPS = frozenset({"project"})
TOTALS_GRAINS = ("trace_totals",)  # what a result from the fast path says it read


def trace_series(series: tuple[str, ...]) -> bool:
    """True when the series are trace metrics; refuses a mix, which no one query can answer
    (a trace's rows are not a span's rows)."""
    traces = [s for s in series if METRICS[s.split(".")[0]].subject is Subject.TRACES]
    if traces and len(traces) != len(series):
        others = [s for s in series if s not in traces]
        raise MetricError(
            f"Trace metrics ({', '.join(traces)}) count traces, the others ({', '.join(others)}) "
            "count spans: chart them separately (one query each)."
        )
    return bool(traces)


def totals_can_answer(group_by: tuple[str, ...], spec: FilterSpec) -> bool:
    return set(group_by) <= TOTALS_GROUPS and spec.only_uses(TOTALS_FILTERS)


def _series(name: str, c) -> ColumnElement:
    """One series as an aggregate over per-trace rows, as its declaration says."""
    metric, agg = name.split(".")
    return declared_aggregate(METRICS[metric], Agg(agg), c)


def _per_trace(first, last_end, span_count, error_count, cost, tokens) -> list[ColumnElement]:
    return [
        first.label("first_start"),
        last_end.label("last_end"),
        ((epoch_us(last_end) - epoch_us(first)) / 1000.0).label("duration_ms"),
        span_count.label("span_count"),
        error_count.label("error_count"),
        func.coalesce(cost, 0.0).label("total_cost_usd"),
        func.coalesce(tokens, 0).label("total_tokens"),
    ]


def _from_spans(
    scope: Scope,
    spec: FilterSpec,
    now: datetime,
    dialect: str,
    start: datetime,
    end: datetime,
    group_by: tuple[str, ...],
) -> Select:
    tree = spans.alias("tree")
    t = tree.c
    first = func.min(t.start_time)
    is_root = t.parent_span_id.is_(None)
    dims = []
    for d in group_by:
        value = by_group(d).expression(t)
        root = func.max(case((is_root, value)))
        dims.append((func.coalesce(root, func.min(value)) if d == "project" else root).label(d))
    s = spans.c
    # a trace whose first start is in the window has a span starting in it ...
    window = select(s.trace_id).where(
        *span_conditions(scope), s.start_time >= start, s.start_time < end
    )
    where = [t.trace_id.in_(window.correlate(None))]
    conditions = filter_conditions(spec.replace(relative=None, start=None, end=None), now, dialect)
    if conditions:  # ... and a matching span, which starts no earlier than the trace
        matching = select(s.trace_id).where(
            *span_conditions(scope), s.start_time >= start, *conditions
        )
        where.append(t.trace_id.in_(matching.correlate(None)))
    error = func.coalesce(func.sum(case((t.status == "error", 1), else_=0)), 0)
    columns = _per_trace(
        first,
        func.max(t.end_time),
        func.count(),
        error,
        func.sum(t.total_cost_usd),
        func.sum(t.total_tokens),
    )
    return (
        select(*columns, *dims)
        .where(*span_conditions(scope, tree), counted(t), *where)
        .group_by(t.trace_id)
        .having(first >= start, first < end)
    )


def _from_totals(
    scope: Scope,
    spec: FilterSpec,
    start: datetime,
    end: datetime,
    group_by: tuple[str, ...],
    every_trace: bool = False,
) -> CompoundSelect | Select:
    """The same rows from `trace_totals`. A row not `shared` is a whole trace (all its spans in
    one project) and is read as it is, with no grouping; only the few traces spread over
    several projects add their rows up (`_shared_traces`). `every_trace`: on a store that groups
    the table when read (`Store.groups_trace_totals`), every trace's rows are added up at once."""
    if every_trace:
        return _shared_traces(scope, spec, start, end, group_by, every_trace=True)
    o = trace_totals.c
    columns = _per_trace(
        o.first_start, o.last_end, o.span_count, o.error_count, o.total_cost_usd, o.total_tokens
    )
    dims = [o.project_id.label("project")] if "project" in group_by else []
    where = [
        *span_conditions(scope, trace_totals),
        o.shared.is_(False),
        o.last_start >= start,  # the (org, last_start) index: first_start <= last_start
        o.first_start >= start,
        o.first_start < end,
    ]
    if spec.project_ids:
        where.append(o.project_id.in_(sorted(spec.project_ids)))
    whole = select(*columns, *dims).where(*where)
    return union_all(whole, _shared_traces(scope, spec, start, end, group_by))


def _shared_traces(
    scope: Scope,
    spec: FilterSpec,
    start: datetime,
    end: datetime,
    group_by: tuple[str, ...],
    *,
    every_trace: bool = False,
) -> Select:
    """Traces with rows in several projects: their rows added up, one row per trace.
    `every_trace`: every trace so (a trace of one project is its one row added up), with no
    narrowing by the window: a store whose `trace_totals` is itself a grouping of partial rows
    (`Store.groups_trace_totals`) reads it once, where the two parts read it six times."""
    # every trace's rows added up: on the store's partial rows themselves (one grouping)
    table = partial_rows if every_trace else trace_totals
    tree = table.alias("tree")
    t = tree.c
    first = func.min(t.first_start)
    dims = []
    if "project" in group_by:
        has_root = t.root_span_id != "" if every_trace else t.root_id.is_not(None)
        root = func.max(case((has_root, t.project_id)))
        dims.append(func.coalesce(root, func.min(t.project_id)).label("project"))
    o = trace_totals.c
    # every row of a trace that starts in the window started before its end and has a span
    # starting after the window's start (the partial index of shared rows on last_start)
    window = select(o.trace_id).where(
        *span_conditions(scope, trace_totals),
        is_shared(trace_totals),
        o.last_start >= start,
        o.first_start < end,
    )
    where = [] if every_trace else [is_shared(tree), t.trace_id.in_(window.correlate(None))]
    if spec.project_ids:
        # a (project, trace)'s last start is the latest of its partial rows'
        m = table.c
        matching = select(m.trace_id).where(
            *span_conditions(scope, table),
            *([] if every_trace else [is_shared(trace_totals)]),
            m.last_start >= start,
            m.project_id.in_(sorted(spec.project_ids)),
        )
        where.append(t.trace_id.in_(matching.correlate(None)))
    columns = _per_trace(
        first,
        func.max(t.last_end),
        func.sum(t.span_count),
        func.sum(t.error_count),
        func.sum(t.total_cost_usd),
        func.sum(t.total_tokens),
    )
    return (
        select(*columns, *dims)
        .where(*span_conditions(scope, tree), *where)
        .group_by(t.trace_id)
        .having(first >= start, first < end)
    )


def trace_select(
    scope: Scope,
    series: tuple[str, ...],
    group_by: tuple[str, ...],
    spec: FilterSpec,
    now: datetime,
    dialect: str,
    bucket_seconds: int | None,
    start: datetime,
    end: datetime,
    *,
    fold: bool = False,
    totals: bool = False,
    bucketing: Bucketing | None = None,
) -> Select:
    """The series per bucket (of first starts) and group, from per-trace rows. `totals`: read
    `trace_totals` (only where `totals_can_answer`); `fold`: as in `metrics/raw.py`."""
    if totals:
        every = store_for(dialect).groups_trace_totals
        rows = _from_totals(scope, spec, start, end, group_by, every_trace=every)
    else:
        rows = _from_spans(scope, spec, now, dialect, start, end, group_by)
    per = rows.subquery("per_trace")
    c = per.c
    keys: list[ColumnElement] = []
    if bucketing is not None:  # on the query zone's clock
        keys.append(bucket_of(c.first_start, bucketing).label("bucket"))
    elif bucket_seconds is not None:
        keys.append(time_bucket(c.first_start, bucket_seconds).label("bucket"))
    dims = [c[d] for d in group_by]
    keys += (
        folded_columns(dims, group_by)
        if fold
        else [x.label(d) for x, d in zip(dims, group_by, strict=True)]
    )
    query = select(*keys, *(_series(s, c).label(s) for s in series)).select_from(per)
    if not keys:
        return query
    if fold:  # by position, as in metrics/raw.py
        return query.group_by(*(literal_column(str(i + 1)) for i in range(len(keys))))
    return query.group_by(*keys)


def trace_plan(
    scope: Scope,
    series: tuple[str, ...],
    group_by: tuple[str, ...],
    spec: FilterSpec,
    now: datetime,
    dialect: str,
    bucket_seconds: int | None,
    start: datetime,
    end: datetime,
    *,
    fold: bool,
    force: str | None,
    bucketing: Bucketing | None = None,
) -> tuple[Select, str, tuple[str, ...]]:
    """(statement, source, grains): `trace_totals` where it can answer ("rollup"), else spans."""
    can = totals_can_answer(group_by, spec)
    if force == "rollup" and not can:
        raise ValueError("trace_totals cannot answer this query; force='rollup' does not apply.")
    totals = force == "rollup" or (force is None and can)
    statement = trace_select(
        scope,
        series,
        group_by,
        spec,
        now,
        dialect,
        bucket_seconds,
        start,
        end,
        fold=fold,
        totals=totals,
        bucketing=bucketing,
    )
    return statement, ("rollup" if totals else "raw"), (TOTALS_GRAINS if totals else ())


def trace_counts(
    engine: Engine, scope: Scope, spec: FilterSpec, windows: list[tuple[datetime, datetime]]
) -> list[int]:
    """The traces of the scope whose first start falls in each of `windows` (the filter's
    projects, as `trace_count.count` from `trace_totals` counts them), in one statement: on a
    store that groups its `trace_totals` when read (`Store.groups_trace_totals`), each
    statement groups every trace of the org, so the Overview's two periods share one."""
    if not store_for(engine).groups_trace_totals or not totals_can_answer((), spec):
        raise ValueError("trace_counts: a store grouping trace_totals, time and project only.")
    start, end = min(a for a, _ in windows), max(b for _, b in windows)
    per = _shared_traces(scope, spec, start, end, (), every_trace=True).subquery("per_trace")
    first = per.c.first_start
    counts = [
        func.coalesce(func.sum(case((and_(first >= a, first < b), 1), else_=0)), 0)
        for a, b in windows
    ]
    with engine.connect() as conn:
        return [int(n) for n in conn.execute(select(*counts).select_from(per)).one()]
