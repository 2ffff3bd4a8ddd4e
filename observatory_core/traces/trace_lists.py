"""Traces mode: whole traces listed by their root, sorted by a root column (`read_roots`); by a
tree total in `traces/tree_ranking.py`, which shares the trace totals' pieces here.

A trace is listed when any of its spans matches the filter; cost, tokens, span and error
counts and the duration (earliest start to latest end) cover the whole tree (the scope's part
of it).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.engine import Connection

from observatory_core.accounts.scope import Scope, scoped_spans, span_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.dialect import arrival_order
from observatory_core.storage.schema import spans, trace_totals
from observatory_core.storage.stores import store_for
from observatory_core.traces.counted_traces import count_roots, counting_page, set_aside_flag
from observatory_core.traces.cursor import Cursor
from observatory_core.traces.fields import field_column
from observatory_core.traces.paging import after, page_end
from observatory_core.traces.root_stretches import roots_by_stretch, roots_passing


def tree_totals(scope: Scope, which, max_id: int):
    """Per trace: cost, tokens, span and error counts over the whole tree (the spans that
    count: a duplicate set aside adds nothing, `semantic/duplicates.py`), as of the pin."""
    c, kept = spans.c, counted(spans.c)
    return (
        scoped_spans(
            scope,
            spans.c.trace_id.label("t_id"),
            func.sum(case((kept, c.total_cost_usd), else_=0.0)).label("t_cost"),
            func.sum(case((kept, c.total_tokens), else_=0)).label("t_tokens"),
            func.sum(case((kept, 1), else_=0)).label("t_spans"),
            func.sum(case((and_(kept, c.status == "error"), 1), else_=0)).label("t_errors"),
            func.min(spans.c.start_time).label("t_first"),
            func.max(spans.c.end_time).label("t_last"),
        )
        .where(which, arrival_order(spans.c.id) <= max_id)
        .group_by(spans.c.trace_id)
        .subquery()
    )


def _walks_from_newest(
    conn: Connection, scope: Scope, spec: FilterSpec, direction: str, as_of
) -> bool:
    """Whether a page of roots is best found by walking the roots from the newest and probing
    each one's trace_totals: newest first, only time and project filter, and a window that ends
    within an hour of the newest span (the explorer's default view). Both plans give the same
    rows; for other windows the walk could pass many roots before it finds a page."""
    if direction != "desc" or not spec.only_uses({"project_ids"}):
        return False
    end = spec.window(as_of)[1]
    if end is None:
        return True
    newest = conn.execute(scoped_spans(scope, func.max(spans.c.start_time))).scalar()
    return newest is None or end >= newest - timedelta(hours=1)


def read_roots(
    conn: Connection,
    scope: Scope,
    where: list,
    wanted: tuple[str, ...],
    *,
    spec: FilterSpec,
    sort: str,
    direction: str,
    limit: int,
    position: Cursor | None,
    as_of: datetime,
    max_id: int,
    count: bool,
    by_prefix: bool = False,
) -> tuple[list[dict], str | None, int | None]:
    """Traces sorted by their root's start: page through roots first, then total only that page.

    Aggregating every matching trace before sorting cost ~1 s at 1M spans; walking the
    roots index and totalling 50 trees is what a first page needs. For the default view
    (`_walks_from_newest`) each root is checked against its trace's trace_totals rows (an index
    probe), not by collecting the trace ids of every span in the window first (~600 ms at 1M
    spans on SQLite). `by_prefix` (the span store, no text search): newest first, the page is
    the newest roots when they pass the filter themselves (a window alone), else read within a
    stretch of the first stored roots (`root_stretches.py`).
    """
    matching = spans.c.trace_id.in_(scoped_spans(scope, spans.c.trace_id).where(*where))
    has_match = matching
    pinned = arrival_order(spans.c.id) <= max_id
    walks = store_for(conn).correlated_reads  # the walk probes trace_totals per root
    if walks and _walks_from_newest(conn, scope, spec, direction, as_of):
        t = trace_totals
        probe = window_matches(scope, spec, where, as_of, max_id)
        has_match = (
            select(literal(1))
            .where(t.c.trace_id == spans.c.trace_id, *probe)
            .correlate(spans)
            .exists()
        )
    roots = scoped_spans(scope, *(field_column(f) for f in wanted), set_aside_flag()).where(
        spans.c.parent_span_id.is_(None), pinned
    )
    key = spans.c[sort]
    if position:
        roots = roots.where(after(key, spans.c.id, position))

    def read(roots) -> list[dict]:
        rows = None
        if by_prefix and direction == "desc":  # the span store: the newest roots first
            start, end = spec.window(as_of)
            # the window alone: its newest roots are likely the page, but not a first page's
            # when the window ended before now (the roots since its end are newest, and fail it)
            if spec.only_uses(()) and (position or end is None or end >= as_of):
                rows = roots_passing(
                    conn, where, roots, limit=limit, position=position, start=start
                )
            if rows is None:  # within a stretch of stored roots
                rows = roots_by_stretch(
                    conn, scope, where, roots, limit=limit, position=position, pinned=pinned
                )
        if rows is None:
            order = (
                (key.desc(), spans.c.id.desc())
                if direction == "desc"
                else (key.asc(), spans.c.id.asc())
            )
            page = conn.execute(roots.where(has_match).order_by(*order).limit(limit + 1))
            rows = [dict(r) for r in page.mappings()]
        return rows

    # no trace of twins set aside alone
    rows = counting_page(conn, scope, max_id, roots, read, within=[matching])
    rows, next_cursor = page_end(rows, limit, sort, direction, as_of, max_id)
    ids = [r["trace_id"] for r in rows]
    tree = tree_totals(scope, spans.c.trace_id.in_(ids), max_id)
    totals = {t[0]: t[1:] for t in conn.execute(select(tree))} if ids else {}
    total = None
    if count:
        # every root in one pass (a second only when it counted set-aside roots)
        total = count_roots(
            conn, scope, [spans.c.parent_span_id.is_(None), matching, pinned], max_id
        )
    for r in rows:
        cost, tokens, n_spans, n_errors, first, last = totals[r["trace_id"]]
        r.update(span_count=n_spans, error_count=n_errors)
        if "duration_ms" in r:
            r["duration_ms"] = (last - first).total_seconds() * 1000
        if "total_cost_usd" in r:
            r["total_cost_usd"] = cost
        if "total_tokens" in r:
            r["total_tokens"] = tokens
    return rows, next_cursor, total


def summed_totals(scope: Scope, which):
    """Per trace: its trace_totals rows (one per project) added up, for the traces `which` picks
    (also the per-trace totals of the Sessions view, `traces/sessions.py`)."""
    t = trace_totals
    return (
        select(
            t.c.trace_id,
            func.max(t.c.root_id).label("root_id"),
            func.max(arrival_order(t.c.root_id)).label("root_arrival"),
            func.sum(t.c.total_cost_usd).label("total_cost_usd"),
            cast(func.sum(t.c.total_tokens), BigInteger).label("total_tokens"),
            cast(func.sum(t.c.span_count), BigInteger).label("span_count"),
            cast(func.sum(t.c.error_count), BigInteger).label("error_count"),
            func.max(t.c.max_span_id).label("newest"),
            func.min(t.c.first_start).label("first_start"),
            func.max(t.c.last_end).label("last_end"),
        )
        .where(*span_conditions(scope, t), which)
        .group_by(t.c.trace_id)
    )


def window_matches(scope: Scope, spec: FilterSpec, where: list, as_of: datetime, max_id: int):
    """Conditions on trace_totals rows for "the trace has a span in the window" (and in the
    filter's projects), from each row's first/last start (one index range) instead of grouping
    every span in the window.

    A row whose spans all lie inside the window (and before the pin) matches outright; one that
    only overlaps it is confirmed by looking for a matching span.
    """
    t = trace_totals
    start, end = spec.window(as_of)
    overlaps, inside = [], [t.c.max_span_id <= max_id]
    if start is not None:
        overlaps.append(t.c.last_start >= start)
        inside.append(t.c.first_start >= start)
    if end is not None:
        overlaps.append(t.c.first_start < end)
        inside.append(t.c.last_start < end)
    if spec.project_ids:
        overlaps.append(t.c.project_id.in_(spec.project_ids))
    confirmed = (
        select(literal(1))
        .where(
            *span_conditions(scope),
            spans.c.trace_id == t.c.trace_id,
            spans.c.project_id == t.c.project_id,
            # always true; a correlation other than equality keeps PostgreSQL from turning
            # this into one hash of every span in the window (it probes per row instead,
            # and only rows that straddle the window get here)
            spans.c.start_time >= t.c.first_start,
            *where,
        )
        .correlate(t)  # only the row's table: under `read_roots` an outer query reads spans too
        .exists()
    )
    return [*span_conditions(scope, t), *overlaps, or_(and_(*inside), confirmed)]
