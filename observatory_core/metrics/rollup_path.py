"""The rollup path: whole rollup buckets for the inside of the range, raw spans for the edges.

A range [start, end) is cut into the longest aligned stretches each grain covers (1 day, then
1 hour, then 1 minute); what is left at the edges (under a minute) is read from spans with
the same partial aggregates, so counts and sums are exact and only percentiles approximate.
Here the one statement is built; the cut is `rollup_segments.py`'s, and the merged rows are
finished by `rollup_values.py` (percentiles and their check from `rollup_bins.py`).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.accounts.scope import Scope
from observatory_core.base.zones import Bucketing
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import (
    METRICS,
    PERCENTILES,
    ROLLUP_GROUPS,
    Agg,
    Kind,
    Subject,
)
from observatory_core.metrics.folding import folded_columns
from observatory_core.metrics.rollup_bins import BIN_PAIRS
from observatory_core.metrics.rollup_segments import plan_segments, usable_grains
from observatory_core.rollups.partials import partial_select
from observatory_core.semantic import field_lookups
from observatory_core.semantic.duplicates import counted
from observatory_core.semantic.metrics import SUBJECT_ROWS, sketched, subject_condition
from observatory_core.storage.clickhouse.layout import BINS_COLUMN
from observatory_core.storage.dialect import (
    bin_map_pairs,
    bucket_of,
    epoch_us,
    rollup_count,
    time_bucket,
)
from observatory_core.storage.packed_sketch import sketch_merge
from observatory_core.storage.schema import ROLLUP_GRAINS, ROLLUPS, spans

# The filter keys a rollup row can answer (everything else needs raw spans), and the rollup
# column each reads: declared with the fields (`semantic.fields`).
ROLLUP_FILTERS = field_lookups.ROLLUP_FILTERS
_FILTER_COLUMN = field_lookups.ROLLUP_FILTER_COLUMNS


def rollup_can_answer(series: tuple[str, ...], group_by: tuple[str, ...], spec: FilterSpec) -> bool:
    for name in series:
        metric, agg = name.split(".")
        partials = METRICS[metric].rollup
        if partials is None or METRICS[metric].subject not in SUBJECT_ROWS:
            return False  # raw spans only (the raw path refuses subjects it cannot count)
        if Agg(agg) in PERCENTILES and not partials.sketch:
            return False  # only latency has a sketch
    return set(group_by) <= ROLLUP_GROUPS and spec.only_uses(ROLLUP_FILTERS)


def _filter_expression(key: str, t) -> ColumnElement:
    """A rollup filter's column, or its field's expression over the table's columns (the
    `llm_call` flag reads as "yes"/"no")."""
    field = field_lookups.filter_keys()[key]
    return field.expression(t.c)


# The partial columns each aggregation reads: merging only those keeps the database's work
# and the rows it sends proportional to what was asked.
_AGG_PARTS = {
    Agg.COUNT: ("count",),
    Agg.SUM: ("sum",),
    Agg.AVG: ("count", "sum"),
    Agg.MIN: ("min",),
    Agg.MAX: ("max",),
    Agg.STDDEV: ("count", "sum", "sumsq"),
}


def _needs(series: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(measures, partial columns) the series read; the latency sketch for percentiles."""
    measures, parts = [], ["span_count"]  # every rollup row's own size
    for name in series:
        metric, agg = name.split(".")
        m = METRICS[metric]
        if m.kind != Kind.VALUE:  # counts and shares: their count columns
            parts += [c for c in (m.rollup.column, m.rollup.of) if c]
            continue
        measure = m.rollup.column
        measures.append(measure)
        if Agg(agg) in PERCENTILES:
            parts.append("latency_sketch")
        else:
            parts += [f"{measure}_{p}" for p in _AGG_PARTS[Agg(agg)]]
    return list(dict.fromkeys(measures)), list(dict.fromkeys(parts))


def rollup_select(
    scope: Scope,
    series: tuple[str, ...],
    group_by: tuple[str, ...],
    spec: FilterSpec,
    bucket_seconds: int | None,
    start: datetime,
    end: datetime,
    fold: bool = False,
    subject: Subject = Subject.SPANS,
    *,
    bucketing: Bucketing | None = None,
    bin_maps: bool = False,
    or_ranges: bool = False,
    drop_empty: bool = False,
) -> tuple[Select, list[str], dict]:
    """One statement: the segments' partials unioned, merged per bucket and group, over the
    rows of `subject` (rollup rows carry `llm_call` and `operation`, so the subject's
    condition reads them as it reads spans).

    `bin_maps`: the store's rollups keep the latency bins as a map (`latency_bins`), not the
    packed sketch (the span store's, `Store.rollup_bin_maps`): the engine adds the maps and
    the merged bins come back as one text of (bin, count) pairs, `bin_pairs`, with the sketched
    measure's count beside them (`rows_with_bins` checks every span of it is in the bins).

    `or_ranges`: the segments of one grain (the ragged edges at both ends) read as one piece,
    their ranges or'ed (`Store.ors_time_ranges`, the span store's).

    `drop_empty`: a group or bucket whose rows add up to no span is left out
    (`Store.rollups_cancel_out`, the span store's: a key a wrapper move emptied with opposite
    rows, docs/span-store-internals.md "Wrapper moves and their journal"), as the other stores have
    no row for it.

    Returns the statement, the grains it read and its parameters. Statements are built once
    per shape (series, grouping, segments, which filters) with named parameters: built per
    call, their ~100 columns cost ~40 ms of Python and left cyclic garbage whose collection
    paused a later call for 100-150 ms.
    """
    segments = plan_segments(start, end, usable_grains(bucket_seconds, bucketing))
    in_lists = {f: getattr(spec, f) for f in sorted(ROLLUP_FILTERS) if getattr(spec, f)}
    statement = _statement(
        tuple(series),
        tuple(group_by),
        bucket_seconds,
        tuple(grain for grain, _, _ in segments),
        tuple(in_lists),
        scope.project_ids is not None,
        fold,
        subject,
        # edges only where the store needs them: a uniform grid keeps one statement per shape
        None if bucketing is None or bucketing.uniform else bucketing,
        bin_maps,
        or_ranges,
        drop_empty=drop_empty,
    )
    params = _params(scope, segments, in_lists)
    used = ["raw edges" if grain is None else grain for grain, _, _ in segments]
    return statement, list(dict.fromkeys(used)), params


def _params(scope: Scope, segments: list, in_lists: dict) -> dict:
    """The bound values of a rollup statement: the org, the role's projects, each segment's
    range and the filters' value lists."""
    params: dict = {"org_id": scope.org_id}
    if scope.project_ids is not None:
        params["scope_projects"] = sorted(scope.project_ids)
    for i, (_, a, b) in enumerate(segments):
        params[f"from_{i}"], params[f"to_{i}"] = a, b
    params.update({f"in_{f}": list(values) for f, values in in_lists.items()})
    return params


def rollup_select_windows(
    scope: Scope,
    series: tuple[str, ...],
    spec: FilterSpec,
    windows: list[tuple[datetime, datetime]],
    subject: Subject = Subject.SPANS,
    *,
    bin_maps: bool = False,
) -> tuple[Select, list[list[str]], dict]:
    """`rollup_select`'s totals of several windows in one statement, one row per window that
    holds rows (`WINDOW`: its index), each grain read once with every window's ranges of it
    or'ed (the span store's, `Store.pairs_periods`: the Overview's period and the one before,
    docs/span-store-internals.md, "Reports and alerts"). Each window is cut into segments as alone,
    so a row of a piece lies in one window's range, which tells its window. Returns the statement,
    the grains each window read and the parameters."""
    planned = [plan_segments(a, b, usable_grains(None)) for a, b in windows]
    segments = [segment for window in planned for segment in window]
    in_lists = {f: getattr(spec, f) for f in sorted(ROLLUP_FILTERS) if getattr(spec, f)}
    statement = _statement(
        tuple(series),
        (),
        None,
        tuple(grain for grain, _, _ in segments),
        tuple(in_lists),
        scope.project_ids is not None,
        False,
        subject,
        None,
        bin_maps,
        True,
        tuple(w for w, window in enumerate(planned) for _ in window),
    )
    params = _params(scope, segments, in_lists)
    used = [
        list(dict.fromkeys("raw edges" if grain is None else grain for grain, _, _ in window))
        for window in planned
    ]
    return statement, used, params


# The window column of `rollup_select_windows`'s rows.
WINDOW = "window"


@lru_cache(maxsize=256)
def _statement(
    series: tuple[str, ...],
    group_by: tuple[str, ...],
    bucket_seconds: int | None,
    grains: tuple[str | None, ...],
    filters: tuple[str, ...],
    project_limited: bool,
    fold: bool = False,
    subject: Subject = Subject.SPANS,
    zoned: Bucketing | None = None,
    bin_maps: bool = False,
    or_ranges: bool = False,
    windows: tuple[int, ...] | None = None,
    drop_empty: bool = False,
) -> Select:
    """`windows`: each segment's window (`rollup_select_windows`), or None for one range.
    `drop_empty`: the groups and buckets whose rows add up to no span left out."""
    measures, parts = _needs(series)
    bins = "latency_sketch" in parts
    bin_map = None
    if bins and bin_maps:  # the span store: the same bins, kept as a map
        parts.remove("latency_sketch")
        bins, bin_map = False, BINS_COLUMN
        # rows written before the store kept bins have none: `rows_with_bins` tells by this
        parts.append(f"{sketched().rollup.column}_count")
        parts = list(dict.fromkeys(parts))
    own = [bin_map] if bin_map else []  # columns every piece selects as they are
    dims = [field_lookups.by_group(d).name for d in group_by]
    width = bucket_seconds or 86400

    def conditions(t, time_column, i: int) -> list[ColumnElement[bool]]:
        out = [t.c.org_id == bindparam("org_id")]
        if project_limited:
            out.append(t.c.project_id.in_(bindparam("scope_projects", expanding=True)))
        same = [k for k, g in enumerate(grains) if g == grains[i]] if or_ranges else [i]
        ranges = [
            [
                time_column >= bindparam(f"from_{j}", type_=time_column.type),
                time_column < bindparam(f"to_{j}", type_=time_column.type),
            ]
            for j in same
        ]
        out += ranges[0] if len(ranges) == 1 else [or_(*(and_(*r) for r in ranges))]
        out += [_filter_expression(f, t).in_(bindparam(f"in_{f}", expanding=True)) for f in filters]
        rows = subject_condition(subject, t.c)
        return out if rows is None else [*out, rows]

    def window_of(time_column, i: int) -> list[ColumnElement]:
        """The piece's rows' window: that of the segment whose range holds their time."""
        if windows is None:
            return []
        same = [k for k, g in enumerate(grains) if g == grains[i]] if or_ranges else [i]
        ranges = [
            (
                and_(
                    time_column >= bindparam(f"from_{k}", type_=time_column.type),
                    time_column < bindparam(f"to_{k}", type_=time_column.type),
                ),
                windows[k],
            )
            for k in same
        ]
        return [case(*ranges, else_=-1).label(WINDOW)]

    pieces = []
    for i, grain in enumerate(grains):
        if or_ranges and grain in grains[:i]:
            continue  # read with the first segment of its grain
        if grain is None:
            src = partial_select(
                spans,
                width,
                where=[*conditions(spans, spans.c.start_time, i), counted(spans.c)],
                dimensions=tuple(dims),
                measures=tuple(measures),
                with_bins=bins,
                bucketing=zoned,
                bin_map_column=bin_map,
                keys=tuple(window_of(spans.c.start_time, i)),
            ).subquery()
            # Of the rollup columns' own types: were the union's columns wider than a rollup
            # table's, PostgreSQL would convert every rollup row on its way into the union.
            pieces.append(
                select(
                    src.c.bucket_start,
                    *([src.c[WINDOW]] if windows is not None else []),
                    *(src.c[d] for d in dims),
                    *(_typed_as_rollup(src.c[p], p) for p in parts),
                    *(src.c[c] for c in own),
                )
            )
            continue
        t = ROLLUPS[grain]
        start = t.c.bucket_start
        if zoned is not None:
            start = bucket_of(start, zoned).label("bucket_start")
        elif bucket_seconds is not None and ROLLUP_GRAINS[grain] != bucket_seconds:
            start = time_bucket(start, bucket_seconds).label("bucket_start")
        pieces.append(
            select(
                start,
                *window_of(t.c.bucket_start, i),
                *(t.c[d] for d in dims),
                *(t.c[p] for p in parts),
                *(literal_column(c) for c in own),  # not in schema.py's rollups
            ).where(*conditions(t, t.c.bucket_start, i))
        )
    if not pieces:  # an empty range: one empty select keeps the shape
        t = ROLLUPS["1day"]
        pieces.append(
            select(
                t.c.bucket_start,
                *([literal(-1).label(WINDOW)] if windows is not None else []),
                *(t.c[d] for d in dims),
                *(t.c[p] for p in parts),
                *(literal_column(c) for c in own),
            ).where(literal(False))
        )
    u = union_all(*pieces).subquery("u")
    # each group's field over the merged rows (its column, or an expression of it)
    grouped = [field_lookups.by_group(g).expression(u.c) for g in group_by]
    keys: list[ColumnElement] = list(grouped)
    if fold:
        columns = folded_columns(grouped, group_by)
        keys = list(columns)
    else:
        columns = [c.label(g) for c, g in zip(grouped, group_by, strict=True)]
    if bucket_seconds is not None:
        # Every piece starts its rows at their query bucket (rollup rows of the bucket's own
        # grain already do); the fetch gets the bucket as a number, converted once per group.
        keys.insert(0, u.c.bucket_start)
        columns.insert(0, epoch_us(u.c.bucket_start).label("bucket"))
    if windows is not None:
        keys.insert(0, u.c[WINDOW])
        columns.insert(0, u.c[WINDOW])
    aggs = []
    for p in parts:
        if p == "latency_sketch":
            aggs.append(sketch_merge(u.c[p]).label("bins"))
        elif p.endswith("_min") or p.endswith("_max"):
            aggs.append((func.min if p.endswith("_min") else func.max)(u.c[p]).label(p))
        elif p.endswith("_count"):  # a bigint, not PostgreSQL's numeric sum of bigints
            aggs.append(cast(func.sum(u.c[p]), BigInteger).label(p))
        else:
            aggs.append(func.sum(u.c[p]).label(p))
    if bin_map is not None:  # the maps added by the engine, read as the packed sketch is
        totals = bucket_seconds is None and not group_by  # one group per window
        aggs.append(bin_map_pairs(u.c[bin_map], totals).label(BIN_PAIRS))
    query = select(*columns, *aggs)
    if drop_empty and keys:  # totals alone keep their one row, as elsewhere
        query = query.having(func.sum(u.c.span_count) > 0)
    if (
        fold and keys
    ):  # by position: the CASE's parameters are numbered apart in SELECT and GROUP BY
        return query.group_by(*(literal_column(str(i + 1)) for i in range(len(keys))))
    return query.group_by(*keys) if keys else query


def _typed_as_rollup(value: ColumnElement, part: str) -> ColumnElement:
    """A raw edge's partial of the rollup column's own type (`rollup_count` for counts: the
    span store's are unsigned)."""
    kind = ROLLUPS["1min"].c[part].type
    if isinstance(kind, Integer):
        return rollup_count(value, kind).label(part)
    return cast(value, kind).label(part)
