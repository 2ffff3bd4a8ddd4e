"""The raw path: metrics computed from spans in one grouped query; percentiles are exact."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, case, func, literal_column
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.base.zones import Bucketing
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS, PERCENTILES, Agg, Kind, Metric, Subject
from observatory_core.metrics.folding import folded_columns
from observatory_core.semantic.duplicates import counted
from observatory_core.semantic.field_lookups import by_group
from observatory_core.semantic.metrics import subject_condition
from observatory_core.storage.dialect import bucket_of, percentile_cont, stddev_samp, time_bucket
from observatory_core.storage.schema import spans

_AGGREGATE = {
    Agg.COUNT: func.count,
    Agg.SUM: func.sum,
    Agg.AVG: func.avg,
    Agg.MIN: func.min,
    Agg.MAX: func.max,
    Agg.STDDEV: stddev_samp,
}


def dimension_column(dim: str) -> ColumnElement:
    return by_group(dim).expression(spans.c)


def series_expression(name: str) -> ColumnElement:
    """One series ('metric.agg') as an aggregate over the rows of a group, as its declaration
    (`semantic/metrics.py`) says; the rows are its subject's (`raw_select` restricts them)."""
    metric, agg = name.split(".")
    m = METRICS[metric]
    return declared_aggregate(m, Agg(agg), spans.c)


def declared_aggregate(m: Metric, agg: Agg, columns) -> ColumnElement:
    """`m` aggregated as `agg` over the rows `columns` belong to (spans, or one row per trace
    in `trace_path`), by the kind its declaration gives."""
    expression = m.expression(columns) if m.expression is not None else None
    if m.kind == Kind.ROWS:
        if expression is None:
            return func.count()
        return func.coalesce(func.sum(case((expression, 1), else_=0)), 0)
    if m.kind == Kind.SHARE:
        return func.avg(case((expression, 1.0), else_=0.0))
    if m.kind == Kind.DISTINCT:
        return func.count(expression.distinct())
    if agg in PERCENTILES:
        return percentile_cont(expression, PERCENTILES[agg])
    return _AGGREGATE[agg](expression)


def raw_select(
    scope: Scope,
    series: tuple[str, ...],
    group_by: tuple[str, ...],
    spec: FilterSpec,
    now: datetime,
    dialect: str,
    bucket_seconds: int | None,
    fold: bool = False,
    subject: Subject = Subject.SPANS,
    *,
    bucketing: Bucketing | None = None,
) -> Select:
    """The series over the spans of `subject` (every series must be of it; a subject that is
    not one of spans is refused). `fold`: groups outside the `fold_keys` parameter become one
    "(other)" group. `bucketing`: buckets on a zone's clock (else UTC, `bucket_seconds` wide)."""
    for name in series:
        if METRICS[name.split(".")[0]].subject is not subject:
            raise ValueError(f"{name}: not a metric of {subject.value}; ask one subject at a time.")
    rows = subject_condition(subject, spans.c)
    keys: list[ColumnElement] = []
    if bucketing is not None:
        keys.append(bucket_of(spans.c.start_time, bucketing).label("bucket"))
    elif bucket_seconds is not None:
        keys.append(time_bucket(spans.c.start_time, bucket_seconds).label("bucket"))
    dims = [dimension_column(d) for d in group_by]
    if fold:
        keys += folded_columns(dims, group_by)
    else:
        keys += [c.label(d) for c, d in zip(dims, group_by, strict=True)]
    values = [series_expression(s).label(s) for s in series]
    query = scoped_spans(scope, *keys, *values).where(
        *filter_conditions(spec, now, dialect), counted(spans.c)
    )
    if rows is not None:
        query = query.where(rows)
    if not keys:
        return query.where(literal_column("1") == 1)
    if fold:  # by position: the CASE's parameters are numbered apart in SELECT and GROUP BY
        return query.group_by(*(literal_column(str(i + 1)) for i in range(len(keys))))
    return query.group_by(*keys)
