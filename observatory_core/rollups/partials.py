"""Partial aggregates of spans: what a rollup row holds, computed from any span-shaped source.

The same select fills the rollup tables (from new spans or a full rebuild) and serves the raw
edges of a rollup query, so the two can never disagree on what a measure means.
"""

from __future__ import annotations

from sqlalchemy import (
    Float,
    Integer,
    Select,
    String,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.sql.expression import ColumnElement, FromClause

from observatory_core.base.zones import Bucketing
from observatory_core.semantic.metrics import rollup_counts, rollup_measures, sketched
from observatory_core.storage.dialect import bin_map, bucket_of, latency_bin, time_bucket
from observatory_core.storage.packed_sketch import sketch_of
from observatory_core.storage.schema import (
    DIMENSION_SLOTS,
    ROLLUP_COUNTS,
    ROLLUP_DIMENSIONS,
    ROLLUP_MEASURES,
)

# The span columns a partial needs; a source must offer these.
SOURCE_COLUMNS = (
    *DIMENSION_SLOTS,
    "id",
    "org_id",
    "trace_id",
    "parent_span_id",
    "project_id",
    "provider",
    "model",
    "environment",
    "operation",
    "status",
    "llm_call",
    "start_time",
    "end_time",
    "duration_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "input_cost_usd",
    "output_cost_usd",
    "total_cost_usd",
    "quality_score",
    "user_id",
    "session_id",
)


def _const(value: int):
    """A constant written into the SQL rather than bound (fewer parameters for the drivers to
    parse on every execution)."""
    return literal_column(str(int(value)), Integer())


_ONE, _ZERO = _const(1), _const(0)


def measure_expressions(src: FromClause) -> dict[str, ColumnElement]:
    """Each measure as an expression over span columns (from the metric that declares it);
    NULL where a span has no value."""
    return {measure: m.expression(src.c) for measure, m in rollup_measures().items()}


def count_conditions(src: FromClause) -> dict[str, ColumnElement | None]:
    """Each count column's condition over span columns (None: every span)."""
    return {
        column: m.expression(src.c) if m.expression is not None else None
        for column, m in rollup_counts().items()
    }


def dimension_expressions(src: FromClause) -> dict[str, ColumnElement]:
    c = src.c
    return {
        "project_id": c.project_id,
        "provider": func.coalesce(c.provider, ""),
        "model": func.coalesce(c.model, ""),
        "environment": c.environment,
        "operation": c.operation,
        "status": c.status,
        "llm_call": c.llm_call,
        # declared dimensions (issue 19): '' where a span has no value, or none extracted
        **{slot: func.coalesce(c[slot], "") for slot in DIMENSION_SLOTS},
    }


def actor_select(src: FromClause, bucket_seconds: int, kind: str) -> Select:
    """(org, bucket, project, kind, actor, span_count) rows for the actor rollups."""
    column = src.c.user_id if kind == "user" else src.c.session_id
    keys = [
        src.c.org_id,
        time_bucket(src.c.start_time, bucket_seconds).label("bucket_start"),
        src.c.project_id,
        literal(kind, String()).label("kind"),
        column.label("actor"),
    ]
    return (
        select(*keys, func.count().label("span_count"))
        .where(column.is_not(None))
        .group_by(*keys[:3], column)
    )


def trace_select(src: FromClause) -> Select:
    """Per (org, trace, project): the totals `trace_totals` keeps."""
    c = src.c
    keys = [c.org_id, c.trace_id, c.project_id]
    return select(
        *keys,
        func.max(case((c.parent_span_id.is_(None), c.id))).label("root_id"),
        func.count().label("span_count"),
        func.coalesce(func.sum(case((c.status == "error", _ONE), else_=_ZERO)), _ZERO).label(
            "error_count"
        ),
        func.coalesce(func.sum(c.total_cost_usd), 0.0).label("total_cost_usd"),
        func.coalesce(func.sum(c.total_tokens), _ZERO).label("total_tokens"),
        func.max(c.id).label("max_span_id"),
        func.min(c.start_time).label("first_start"),
        func.max(c.start_time).label("last_start"),
        func.max(c.end_time).label("last_end"),
    ).group_by(*keys)


def partial_select(
    src: FromClause,
    bucket_seconds: int,
    *,
    where: list[ColumnElement[bool]] | None = None,
    dimensions: tuple[str, ...] = ROLLUP_DIMENSIONS,
    measures: tuple[str, ...] = ROLLUP_MEASURES,
    with_bins: bool = True,
    bucketing: Bucketing | None = None,
    bin_map_column: str | None = None,
    keys: tuple[ColumnElement, ...] = (),
) -> Select:
    """SELECT org_id, bucket_start, dimensions..., counts, sums, min, max, latency sketch
    FROM src GROUP BY org, bucket and dimensions; column names match the rollup tables.
    `bucketing`: a query's buckets on a zone's clock, in place of `bucket_seconds` in UTC.
    `bin_map_column`: also the latency bins as a map (`bin_map`) in that column: the span
    store's rollups keep them so (`Store.rollup_bin_maps`). `keys`: labelled expressions over
    `src` grouped by too (the window of `rollup_path.rollup_select_windows`)."""
    values = measure_expressions(src)
    dims = dimension_expressions(src)
    conditions = {c: w for c, w in count_conditions(src).items() if w is not None}
    inner_columns = [
        src.c.org_id,
        (
            bucket_of(src.c.start_time, bucketing)
            if bucketing is not None
            else time_bucket(src.c.start_time, bucket_seconds)
        ).label("bucket_start"),
        *(case((w, _ONE), else_=_ZERO).label(f"_{c}") for c, w in conditions.items()),
        *(dims[d].label(d) for d in dimensions),
        *(values[m].label(m) for m in measures),
        *keys,
    ]
    if with_bins or bin_map_column:
        inner_columns.append(latency_bin(sketched().expression(src.c)).label("_bin"))
    # OFFSET 0 keeps the subquery whole, so each span's bin is computed once, in one place.
    inner = (
        select(*inner_columns).where(*(where or [literal_column("1") == 1])).offset(0).subquery("s")
    )
    i = inner.c
    aggregates: list[ColumnElement] = [
        (func.coalesce(func.sum(i[f"_{c}"]), _ZERO) if c in conditions else func.count()).label(c)
        for c in ROLLUP_COUNTS
    ]
    for m in measures:
        aggregates += [
            func.count(i[m]).label(f"{m}_count"),
            func.sum(i[m]).label(f"{m}_sum"),
            func.min(i[m]).label(f"{m}_min"),
            func.max(i[m]).label(f"{m}_max"),
            # in floating point: token counts squared overflow 32-bit integers
            func.sum(cast(i[m], Float) * cast(i[m], Float)).label(f"{m}_sumsq"),
        ]
    if with_bins:
        aggregates.append(sketch_of(i._bin).label("latency_sketch"))
    if bin_map_column:
        aggregates.append(bin_map(i._bin).label(bin_map_column))
    grouped = [i.org_id, i.bucket_start, *(i[d] for d in dimensions), *(i[k.name] for k in keys)]
    return select(*grouped, *aggregates).group_by(*grouped)
