"""Traces mode by the root's start, newest first, on the span store: the page read among the
roots that start within a stretch of the first stored roots (docs/span-store-internals.md,
"Traces mode"), not among the roots of every trace with a span in the window; for a filter of
the window alone, first as the newest roots when each passes it itself (`roots_passing`).

The plain read (`trace_lists.read_roots`) reads every span of every matching trace (on this
store a `trace_id IN` of all of them, which no index narrows) before it sorts the roots. Here
the edge comes first: the start time of the n-th stored root (after the cursor) that passes the
filter itself, a top-n read. Then the page: the roots starting at or after the edge, of the
traces with a matching span among the traces with a stored span starting at or after it.

Each span is one stored row since schema version 7 (docs/span-store-internals.md, "Each span once"),
and reads pick no copy; the argument below still allows for a second row that writers racing before
the write turns left until the fold, which may hold another start time. Exact for any edge: the edge
is judged on each stored root row under the pin (`Store.on_newest_copy` marks it as a bound copies
may answer apart, so it is never taken as the same in every copy). Every root left out starts before
the edge, so it sorts after every root kept, and a full page (`limit + 1` roots) of those kept is
the page. The traces' own bound (a span starting at or after the edge) leaves out no trace a kept
root belongs to: that root is such a span. A filter on what every copy holds alike (the window, the
projects, the pin) is passed by one copy of a span exactly when by any other, so the matching traces
are the same whichever rows are read. A trace whose root arrived after the pin has no row under it
(the edge, the page and the traces' bound all read under the pin), so it stays off the walk; a trace
that grows while paged keeps its root's start and its pinned totals.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, literal
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import store_for
from observatory_core.traces.cursor import Cursor
from observatory_core.traces.paging import position_time

# Stored roots per root wanted, then a longer stretch when the first held too few matching
# traces' roots (racing copies, a filter its roots do not pass themselves); then the plain read.
STRETCH_PER_ROW = (4, 32)


def traces_matching(conn: Connection, scope: Scope, where: list) -> Select:
    """The ids of the traces with a span passing `where` (for a `trace_id IN`). A filter on what
    every copy of a span holds alike (the window, the projects, the pin: `same_in_every_copy`)
    gives the same traces from any of a span's rows (a racing copy not yet folded included)."""
    return scoped_spans(scope, spans.c.trace_id).where(*where)


def _not_after(position: Cursor):
    """Roots starting no later than the cursor's (newest first), a bound on the sorting key."""
    key = spans.c.start_time
    return key <= literal(position_time(position), type_=key.type)


# The column of `roots_passing`'s read that says whether a root passes the filter itself
_PASSES = "passes_filter_itself"


def roots_passing(
    conn: Connection,
    where: list,
    roots: Select,
    *,
    limit: int,
    position: Cursor | None,
    start: datetime | None,
) -> list[dict] | None:
    """The page of roots newest first (and one more) when the newest `limit + 1` roots starting
    at or after `start` (the window's start, None: all time) each pass the filter `where`
    themselves: one top-n read of roots, no set of matching traces. None when one of them does
    not (its trace may or may not hold a matching span) or fewer start there (a root before
    the window may belong on the page): the caller reads the page another way.

    Exact: a root that passes the filter is a matching span of its own trace, so each of these
    roots is listed; every other root listed starts before `start` or sorts after all of them
    (docs/span-store-internals.md, "Traces mode"). Worth trying for a filter of the time
    window alone, which only roots starting after the window's end fail."""
    key = spans.c.start_time
    page = roots.add_columns(and_(*where).label(_PASSES))
    if start is not None:
        page = page.where(key >= literal(start, type_=key.type))
    if position:  # the keyset's start time as a plain bound too: the store narrows by it
        page = page.where(_not_after(position))
    found = conn.execute(page.order_by(key.desc(), spans.c.id.desc()).limit(limit + 1))
    rows = [dict(r) for r in found.mappings()]
    passed = [bool(r.pop(_PASSES)) for r in rows]
    return rows if len(rows) > limit and all(passed) else None


def roots_by_stretch(
    conn: Connection,
    scope: Scope,
    where: list,
    roots: Select,
    *,
    limit: int,
    position: Cursor | None,
    pinned,
) -> list[dict] | None:
    """The page of roots newest first (and one more), or None when no stretch held a full page
    (the caller reads it plainly). `roots`: the page's roots under the pin and after the cursor,
    without the matching condition; `where`: the filter on spans, as the plain read's."""
    store, key = store_for(conn), spans.c.start_time
    copies = scoped_spans(scope, key).where(spans.c.parent_span_id.is_(None), *where)
    if position:  # the keyset's start time as a plain bound: the store applies it first
        copies = copies.where(_not_after(position))
    for per_row in STRETCH_PER_ROW:
        stretch = copies.order_by(key.desc()).limit(1).offset(per_row * (limit + 1) - 1)
        edge = conn.execute(stretch).scalar()
        if edge is None:  # the rest of the window holds fewer: roots may start before it
            return None
        edge = literal(edge if edge.tzinfo else edge.replace(tzinfo=UTC), type_=key.type)
        reaching = scoped_spans(scope, spans.c.trace_id).where(key >= edge, pinned)
        matching = traces_matching(conn, scope, [*where, spans.c.trace_id.in_(reaching)])
        # the edge judged on each stored root row (a racing copy may start elsewhere), the
        # traces' bound narrowing the traces read
        bounded = roots.where(store.on_newest_copy(key >= edge), spans.c.trace_id.in_(matching))
        page = conn.execute(bounded.order_by(key.desc(), spans.c.id.desc()).limit(limit + 1))
        rows = [dict(r) for r in page.mappings()]
        if len(rows) > limit:
            return rows
    return None
