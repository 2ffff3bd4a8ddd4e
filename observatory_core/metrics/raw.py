"""The raw path: metrics computed from spans in one grouped query; percentiles are exact."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, case, func, literal_column
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS, PERCENTILES, Agg
from observatory_core.metrics.folding import folded_columns
from observatory_core.rollups.partials import measure_expressions
from observatory_core.semantic.fields import by_group
from observatory_core.storage.dialect import percentile_cont, stddev_samp, time_bucket
from observatory_core.storage.schema import spans

_MEASURES = measure_expressions(spans)


def dimension_column(dim: str) -> ColumnElement:
    return by_group(dim).expression(spans.c)


def series_expression(name: str) -> ColumnElement:
    """One series ('metric.agg') as an aggregate over the spans of a group."""
    metric, agg = name.split(".")
    is_error = spans.c.status == "error"
    if metric == "request_count":
        return func.count()
    if metric == "error_count":
        return func.coalesce(func.sum(case((is_error, 1), else_=0)), 0)
    if metric == "error_rate":
        return func.avg(case((is_error, 1.0), else_=0.0))
    if metric == "success_rate":
        return func.avg(case((is_error, 0.0), else_=1.0))
    if metric == "unique_users":
        return func.count(spans.c.user_id.distinct())
    value = _MEASURES[METRICS[metric].measure]
    agg = Agg(agg)
    if agg in PERCENTILES:
        return percentile_cont(value, PERCENTILES[agg])
    return {
        Agg.COUNT: func.count,
        Agg.SUM: func.sum,
        Agg.AVG: func.avg,
        Agg.MIN: func.min,
        Agg.MAX: func.max,
        Agg.STDDEV: stddev_samp,
    }[agg](value)


def raw_select(
    scope: Scope,
    series: tuple[str, ...],
    group_by: tuple[str, ...],
    spec: FilterSpec,
    now: datetime,
    dialect: str,
    bucket_seconds: int | None,
    fold: bool = False,
) -> Select:
    """`fold`: groups outside the `fold_keys` parameter become one "(other)" group."""
    keys: list[ColumnElement] = []
    if bucket_seconds is not None:
        keys.append(time_bucket(spans.c.start_time, bucket_seconds).label("bucket"))
    dims = [dimension_column(d) for d in group_by]
    if fold:
        keys += folded_columns(dims, group_by)
    else:
        keys += [c.label(d) for c, d in zip(dims, group_by, strict=True)]
    values = [series_expression(s).label(s) for s in series]
    query = scoped_spans(scope, *keys, *values).where(*filter_conditions(spec, now, dialect))
    if not keys:
        return query.where(literal_column("1") == 1)
    if fold:  # by position: the CASE's parameters are numbered apart in SELECT and GROUP BY
        return query.group_by(*(literal_column(str(i + 1)) for i in range(len(keys))))
    return query.group_by(*keys)
