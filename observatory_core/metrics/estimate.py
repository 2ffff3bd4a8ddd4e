"""Counts read from the rollups before a metrics answer is: the groups it will hold at least,
and the spans a raw read of its range goes through.

Both read only whole rollup rows inside the range (days, hours, minutes; never the raw edges), so
each is a lower bound, exact to within the edges' spans. They let the engine refuse, in
milliseconds, a query its caps would refuse after the read, or whose raw read could not finish
within the time budget (issue 25; docs/metrics.md, "Bounded answers").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, union_all
from sqlalchemy.engine import Engine
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.accounts.scope import Scope, span_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import Subject
from observatory_core.metrics.rollup_path import ROLLUP_FILTERS, plan_segments
from observatory_core.semantic import fields as semantic_fields
from observatory_core.semantic.metrics import SUBJECT_ROWS, subject_condition
from observatory_core.storage.schema import ROLLUP_GRAINS, ROLLUPS

_GRAINS = sorted(ROLLUP_GRAINS, key=ROLLUP_GRAINS.get, reverse=True)  # coarsest first


def _where(t, scope: Scope, spec: FilterSpec, a: datetime, b: datetime, subject: Subject | None):
    out: list[ColumnElement[bool]] = [
        *span_conditions(scope, t),
        t.c.bucket_start >= a,
        t.c.bucket_start < b,
    ]
    keys = semantic_fields.filter_keys()
    for key in sorted(ROLLUP_FILTERS):
        if values := getattr(spec, key):
            out.append(keys[key].expression(t.c).in_(list(values)))
    rows = subject_condition(subject, t.c) if subject is not None else None
    return out if rows is None else [*out, rows]


def _pieces(scope, spec, start, end, subject, columns) -> list:
    """One select of `columns(table)` per whole rollup segment of [start, end)."""
    return [
        select(*columns(ROLLUPS[grain])).where(*_where(ROLLUPS[grain], scope, spec, a, b, subject))
        for grain, a, b in plan_segments(start, end, _GRAINS)
        if grain is not None
    ]


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
    carried = [g for g in group_by if g in semantic_fields.ROLLUP_GROUPS]
    if not carried or subject not in SUBJECT_ROWS or not spec.only_uses(ROLLUP_FILTERS):
        return 0

    def columns(t):
        return [semantic_fields.by_group(g).expression(t.c).label(g) for g in carried]

    pieces = _pieces(scope, spec, start, end, subject, columns)
    if not pieces:
        return 0
    u = union_all(*pieces).subquery("u")
    distinct = select(*(u.c[g] for g in carried)).distinct().subquery("d")
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(distinct)).scalar() or 0)


def spans_in_range(
    engine: Engine, scope: Scope, spec: FilterSpec, start: datetime, end: datetime
) -> int | None:
    """At least this many spans of the scope, selected by `spec`, started in [start, end) (every
    subject: a raw read goes through them all); None when the rollups cannot apply the filter."""
    if not spec.only_uses(ROLLUP_FILTERS):
        return None
    pieces = _pieces(scope, spec, start, end, None, lambda t: [t.c.span_count])
    if not pieces:
        return 0
    u = union_all(*pieces).subquery("u")
    with engine.connect() as conn:
        return int(conn.execute(select(func.sum(u.c.span_count))).scalar() or 0)
