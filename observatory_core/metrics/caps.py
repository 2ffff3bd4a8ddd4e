"""The bounds of one answer (groups kept, values, spans grouped from raw spans) and their
refusals: before any span is read when the rollups already tell, else after the read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope
from observatory_core.base.zones import Bucketing
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS
from observatory_core.metrics.estimate import known_groups, spans_in_range
from observatory_core.metrics.query import MetricError, MetricQuery
from observatory_core.metrics.rollup_path import rollup_can_answer
from observatory_core.metrics.series_reads import ReadArgs, TooManyRows, compute
from observatory_core.metrics.shaping import typed
from observatory_core.metrics.trace_path import trace_series
from observatory_core.rollups.dimensions import declarable
from observatory_core.storage.stores import store_for

# Groups a totals query may scan before it refuses (past this the grouping itself is the problem).
MAX_SCANNED_GROUPS = 200_000


@dataclass(frozen=True)
class Caps:
    groups: int  # kept without a limit; the rest fold into "(other)"
    cells: int  # values per answer: buckets x groups x series
    raw_spans: int  # spans one answer may group from raw spans by a group-by rollups lack


def bucket_count(buckets: Bucketing) -> int:
    return len(buckets.edges) - 1


def check_cells(
    query: MetricQuery, buckets: int, groups: int, caps: Caps, *, at_least: bool = False
) -> None:
    """`at_least`: `groups` is a lower bound (counted from rollups before the read)."""
    cells = buckets * max(groups, 1) * len(query.series)
    if cells <= caps.cells:
        return
    fits = caps.cells // (buckets * len(query.series))
    advice = (
        f"keep at most {fits} groups (a lower top-N limit), pick "
        if query.group_by and fits >= 1
        else "pick "
    )
    more = " or more" if at_least else ""
    raise MetricError(
        f"This chart would hold {cells:,}{more} values ({buckets:,} buckets x {groups:,}{more} "
        f"groups x {len(query.series)} series), over the limit of {caps.cells:,} per answer. "
        f"Narrow it: {advice}a larger bucket, a shorter range or fewer series."
    )


def too_many_groups(query: MetricQuery) -> MetricError:
    return MetricError(
        f"Grouping by {', '.join(query.group_by)} gives over {MAX_SCANNED_GROUPS:,} groups. "
        "Group by fewer dimensions or filter the spans first."
    )


def refuse_early(
    args: ReadArgs,
    query: MetricQuery,
    caps: Caps,
    buckets: int | None,
    start: datetime,
    end: datetime,
    now: datetime,
) -> None:
    """Refuse, before any span is read, what would be refused after the read: a raw grouping
    over more spans than `caps.raw_spans`, and a chart the cells cap refuses for the groups the
    rollups already know of (`metrics/estimate.py`). Nothing here when the planner is forced."""
    engine, scope, _, series = args
    spec = query.filters.pinned(now)
    if not query.group_by or trace_series(series):
        return
    if not rollup_can_answer(series, query.group_by, spec) and rollup_can_answer(series, (), spec):
        spans_seen = spans_in_range(engine, scope, spec, start, end)
        if spans_seen is not None and spans_seen > caps.raw_spans:
            slots = store_for(engine).reads_declared_slots
            raise _raw_refusal(query, spans_seen, caps.raw_spans, end - start, slots)
    if buckets is None or query.having:
        return
    most = query.limit or caps.groups + 1  # groups the answer holds at most ("(other)" too)
    fits = caps.cells // (buckets * len(query.series))
    if most <= fits:  # fits whatever the groups
        return
    subject = METRICS[series[0].split(".")[0]].subject
    known = known_groups(engine, scope, subject, query.group_by, spec, start, end)
    if known > MAX_SCANNED_GROUPS:
        raise too_many_groups(query)
    check_cells(query, buckets, min(known, most), caps, at_least=known < most)


def _raw_refusal(
    query: MetricQuery, spans_seen: int, cap: int, length: timedelta, slots: bool = True
) -> MetricError:
    """Which group-bys send the read to raw spans, and how to answer from rollups instead
    (`slots`: whether declaring a dimension would, on this store)."""
    raw = [g for g in query.group_by if not rollup_can_answer((), (g,), FilterSpec())]
    names = " and ".join(raw)
    hours = max(1, int(length / timedelta(hours=1) * cap / spans_seen))
    period = f"{hours // 24} days" if hours >= 48 else f"{hours} hours"
    fix = (
        f"declare {names} as a dimension (Admin page, Dimensions) so rollups answer "
        f"{'it' if len(raw) == 1 else 'them'}, or narrow the period to about {period}"
        if slots and all(declarable(g) for g in raw)
        else f"group by fewer dimensions or narrow the period to about {period}"
    )
    return MetricError(
        f"Grouping by {names} reads raw spans (the rollups do not carry "
        f"{'it' if len(raw) == 1 else 'them'}), and this range holds over {spans_seen:,} spans, "
        f"more than the {cap:,} one answer may group from raw spans. Narrow it: {fix}."
    )


def capped_totals(
    engine: Engine,
    scope: Scope,
    query: MetricQuery,
    series: tuple[str, ...],
    start: datetime,
    end: datetime,
    now: datetime,
    force: str | None,
) -> tuple[pl.DataFrame, str, tuple[str, ...]]:
    """One row per group over the whole range, refused past MAX_SCANNED_GROUPS."""
    try:
        frame, source, grains = compute(
            engine, scope, query, series, None, start, end, now, force, max_rows=MAX_SCANNED_GROUPS
        )
    except TooManyRows:
        raise too_many_groups(query) from None
    return typed(frame, series, query.group_by), source, grains
