"""A targeted refold: recompute only the rollup buckets and trace totals of a few spans.

Folding adds; it cannot take a span back out (a minimum or a latency sketch does not
subtract). When a stored span's figures change after it was folded in (it turned out to be
the twin of a later span and stopped counting, or took the model its twin named: see
`ingest/dedup.py`), the buckets it fell in are recomputed from the spans that count: its
minute from the spans, its hour and day from the minutes, its actor buckets and its trace's
totals from the spans. Runs in the writer's transaction, after the batch's own fold.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, or_, select, tuple_
from sqlalchemy.engine import Connection

from observatory_core.rollups.maintain import _mark_shared, merge_select
from observatory_core.rollups.partials import actor_select, partial_select, trace_select
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.schema import (
    ACTOR_GRAINS,
    ACTOR_KINDS,
    ACTOR_ROLLUPS,
    ROLLUP_GRAINS,
    ROLLUPS,
    spans,
    trace_totals,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_of(moment: datetime, seconds: int) -> datetime:
    """The start of the `seconds`-wide bucket holding `moment` (aligned to the epoch, as
    `time_bucket` is)."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    whole = int((moment - _EPOCH).total_seconds() // seconds) * seconds
    return _EPOCH + timedelta(seconds=whole)


def _in_buckets(column, starts: Iterable[datetime], seconds: int):
    width = timedelta(seconds=seconds)
    return or_(*(and_(column >= b, column < b + width) for b in starts))


def refold(conn: Connection, touched: Iterable[tuple[int, str, datetime]]) -> None:
    """Recompute the buckets and trace totals of these (org_id, trace_id, start_time)."""
    touched = list(touched)
    if not touched:
        return
    orgs = sorted({org for org, _, _ in touched})
    for org in orgs:
        starts = [start for o, _, start in touched if o == org]
        _refold_rollups(conn, org, starts)
        _refold_actors(conn, org, starts)
    _refold_traces(conn, sorted({(org, trace) for org, trace, _ in touched}))


def _refold_rollups(conn: Connection, org: int, starts: list[datetime]) -> None:
    minute = ROLLUP_GRAINS["1min"]
    minutes = sorted({bucket_of(s, minute) for s in starts})
    table = ROLLUPS["1min"]
    conn.execute(delete(table).where(table.c.org_id == org, table.c.bucket_start.in_(minutes)))
    where = [
        spans.c.org_id == org,
        _in_buckets(spans.c.start_time, minutes, minute),
        counted(spans.c),
    ]
    source = partial_select(spans, minute, where=where)
    conn.execute(table.insert().from_select([c.name for c in source.selected_columns], source))
    for grain in ("1hour", "1day"):
        seconds = ROLLUP_GRAINS[grain]
        buckets = sorted({bucket_of(s, seconds) for s in starts})
        coarse = ROLLUPS[grain]
        conn.execute(
            delete(coarse).where(coarse.c.org_id == org, coarse.c.bucket_start.in_(buckets))
        )
        fine = (
            select(table)
            .where(table.c.org_id == org, _in_buckets(table.c.bucket_start, buckets, seconds))
            .subquery()
        )
        merged = merge_select(fine, seconds)
        conn.execute(coarse.insert().from_select([c.name for c in merged.selected_columns], merged))


def refold_period(conn: Connection, org: int, start: datetime, end: datetime | None) -> None:
    """Recompute the org's rollup rows over [start, end) (end None: every later bucket) from
    its spans: the minutes from the spans, their hours from the minutes, days from the hours
    (the same sums and merged sketches, from 24 rows a day instead of 1,440). For a
    change to stored spans' rollup keys over a period (a declared dimension's back-fill,
    `rollups/dimensions.py`); `start` and `end` fall on whole hours. Actor rollups and trace
    totals do not carry the changed keys, so they stay."""
    in_range = [spans.c.start_time >= start] + ([] if end is None else [spans.c.start_time < end])
    minute = ROLLUP_GRAINS["1min"]
    table = ROLLUPS["1min"]
    mine = [table.c.org_id == org, table.c.bucket_start >= start]
    if end is not None:
        mine.append(table.c.bucket_start < end)
    conn.execute(delete(table).where(*mine))
    source = partial_select(
        spans, minute, where=[spans.c.org_id == org, *in_range, counted(spans.c)]
    )
    conn.execute(table.insert().from_select([c.name for c in source.selected_columns], source))
    fine = table
    for grain in ("1hour", "1day"):  # a day from its 24 hours, not its 1,440 minutes
        seconds = ROLLUP_GRAINS[grain]
        first = bucket_of(start, seconds)
        coarse = ROLLUPS[grain]
        span_of = [coarse.c.org_id == org, coarse.c.bucket_start >= first]
        fine_of = [fine.c.org_id == org, fine.c.bucket_start >= first]
        if end is not None:
            last = bucket_of(end - timedelta(microseconds=1), seconds) + timedelta(seconds=seconds)
            span_of.append(coarse.c.bucket_start < last)
            fine_of.append(fine.c.bucket_start < last)
        conn.execute(delete(coarse).where(*span_of))
        merged = merge_select(select(fine).where(*fine_of).subquery(), seconds)
        conn.execute(coarse.insert().from_select([c.name for c in merged.selected_columns], merged))
        fine = coarse


def _refold_actors(conn: Connection, org: int, starts: list[datetime]) -> None:
    for grain in ACTOR_GRAINS:
        seconds = ROLLUP_GRAINS[grain]
        buckets = sorted({bucket_of(s, seconds) for s in starts})
        table = ACTOR_ROLLUPS[grain]
        conn.execute(delete(table).where(table.c.org_id == org, table.c.bucket_start.in_(buckets)))
        for kind in ACTOR_KINDS:
            source = actor_select(spans, seconds, kind).where(
                spans.c.org_id == org,
                _in_buckets(spans.c.start_time, buckets, seconds),
                counted(spans.c),
            )
            conn.execute(
                table.insert().from_select([c.name for c in source.selected_columns], source)
            )


def _refold_traces(conn: Connection, keys: list[tuple[int, str]]) -> None:
    t = trace_totals
    conn.execute(delete(t).where(tuple_(t.c.org_id, t.c.trace_id).in_(keys)))
    source = trace_select(spans).where(
        tuple_(spans.c.org_id, spans.c.trace_id).in_(keys), counted(spans.c)
    )
    conn.execute(t.insert().from_select([c.name for c in source.selected_columns], source))
    these = (
        select(t.c.org_id, t.c.trace_id).where(tuple_(t.c.org_id, t.c.trace_id).in_(keys))
    ).subquery()
    _mark_shared(conn, new=these)
