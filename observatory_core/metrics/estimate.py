"""Counts read from the rollups before a metrics answer is: the groups it will hold at least,
and the spans a raw read of its range goes through.

Both read only whole rollup rows inside the range (days, hours, minutes; never the raw edges), so
each is a lower bound, exact to within the edges' spans. They let the engine refuse, in
milliseconds, a query its caps would refuse after the read, or whose raw read could not finish
within the time budget (issue 25; docs/metrics.md, "Group by any tag or metadata key").
Statements are built once per shape with named parameters, as the rollup path's are.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from sqlalchemy import Select, and_, bindparam, func, or_, select, union_all
from sqlalchemy.engine import Engine
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import Subject
from observatory_core.metrics.rollup_path import ROLLUP_FILTERS
from observatory_core.metrics.rollup_segments import plan_segments
from observatory_core.semantic import field_lookups
from observatory_core.semantic.metrics import SUBJECT_ROWS, subject_condition
from observatory_core.storage.schema import ROLLUP_GRAINS, ROLLUPS
from observatory_core.storage.stores import store_for

_GRAINS = sorted(ROLLUP_GRAINS, key=ROLLUP_GRAINS.get, reverse=True)  # coarsest first


def _where(t, ranges: list[int], filters: tuple[str, ...], projects: bool, subject: Subject | None):
    c = t.c
    out: list[ColumnElement[bool]] = [c.org_id == bindparam("org_id")]
    if projects:
        out.append(c.project_id.in_(bindparam("scope_projects", expanding=True)))
    within = [
        and_(c.bucket_start >= bindparam(f"from_{i}"), c.bucket_start < bindparam(f"to_{i}"))
        for i in ranges
    ]
    out.append(within[0] if len(within) == 1 else or_(*within))
    keys = field_lookups.filter_keys()
    out += [keys[f].expression(c).in_(bindparam(f"in_{f}", expanding=True)) for f in filters]
    rows = subject_condition(subject, c) if subject is not None else None
    return out if rows is None else [*out, rows]


@lru_cache(maxsize=128)
def _statement(
    grains: tuple[str, ...],
    group_by: tuple[str, ...],
    filters: tuple[str, ...],
    projects: bool,
    subject: Subject | None,
    or_ranges: bool = False,
    drop_empty: bool = False,
) -> Select:
    """The distinct groups of `group_by` counted, or (no group-by) the spans summed, over one
    whole-rollup segment per grain; `or_ranges`: the segments of one grain read as one piece,
    their ranges or'ed (`Store.ors_time_ranges`: each piece costs the span store a pipeline);
    `drop_empty`: a group whose rows add up to no span not counted (`Store.rollups_cancel_out`,
    the span store's: a key a wrapper move emptied with opposite rows)."""

    def columns(t) -> list:
        if not group_by:
            return [t.c.span_count]
        keys = [field_lookups.by_group(g).expression(t.c).label(g) for g in group_by]
        return [*keys, t.c.span_count] if drop_empty else keys

    parts = {}  # grain -> its segments' indexes, in order of first use
    for i, grain in enumerate(grains):
        parts.setdefault(grain if or_ranges else i, (grain, []))[1].append(i)
    pieces = [
        select(*columns(ROLLUPS[grain])).where(
            *_where(ROLLUPS[grain], ranges, filters, projects, subject)
        )
        for grain, ranges in parts.values()
    ]
    u = union_all(*pieces).subquery("u")
    if not group_by:
        return select(func.sum(u.c.span_count))
    keys = [u.c[g] for g in group_by]
    if drop_empty:
        distinct = select(*keys).group_by(*keys).having(func.sum(u.c.span_count) > 0)
    else:
        distinct = select(*keys).distinct()
    distinct = distinct.subquery("d")
    return select(func.count()).select_from(distinct)


def _count(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    start: datetime,
    end: datetime,
    group_by: tuple[str, ...] = (),
    subject: Subject | None = None,
) -> int:
    segments = [s for s in plan_segments(start, end, _GRAINS) if s[0] is not None]
    if not segments:
        return 0
    filters = tuple(f for f in sorted(ROLLUP_FILTERS) if getattr(spec, f))
    projects = scope.project_ids is not None
    grains = tuple(g for g, _, _ in segments)
    store = store_for(engine)
    statement = _statement(
        grains,
        group_by,
        filters,
        projects,
        subject,
        store.ors_time_ranges,
        store.rollups_cancel_out,
    )
    params: dict = {"org_id": scope.org_id}
    if projects:
        params["scope_projects"] = sorted(scope.project_ids)
    for i, (_, a, b) in enumerate(segments):
        params[f"from_{i}"], params[f"to_{i}"] = a, b
    params.update({f"in_{f}": list(getattr(spec, f)) for f in filters})
    with engine.connect() as conn:
        return int(conn.execute(statement, params).scalar() or 0)


def known_groups(
    engine: Engine,
    scope: Scope,
    subject: Subject,
    group_by: tuple[str, ...],
    spec: FilterSpec,
    start: datetime,
    end: datetime,
) -> int:
    """At least this many groups of `group_by` hold rows of `subject` in [start, end): the
    distinct values of the group-bys the rollups carry (a projection of the groups, so never
    more of them). 0 when the rollups carry none of them or cannot apply the filter."""
    carried = tuple(g for g in group_by if g in field_lookups.ROLLUP_GROUPS)
    if not carried or subject not in SUBJECT_ROWS or not spec.only_uses(ROLLUP_FILTERS):
        return 0
    return _count(engine, scope, spec, start, end, carried, subject)


def spans_in_range(
    engine: Engine, scope: Scope, spec: FilterSpec, start: datetime, end: datetime
) -> int | None:
    """At least this many spans of the scope, selected by `spec`, started in [start, end) (every
    subject: a raw read goes through them all); None when the rollups cannot apply the filter."""
    if not spec.only_uses(ROLLUP_FILTERS):
        return None
    return _count(engine, scope, spec, start, end)
