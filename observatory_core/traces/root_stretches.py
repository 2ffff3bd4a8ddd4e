"""Traces mode by the root's start, newest first, on the span store: the page read among the
roots that start within a stretch of the first stored root copies (docs/scale.md, "Traces
mode"), not among the roots of every trace with a span in the window.

The plain read (`trace_lists.read_roots`) picks the newest copy of every span of every matching
trace (on this store a `trace_id IN` of all of them, which no index narrows) before it sorts the
roots. Here the edge comes first: the start time of the n-th stored copy of a root (after the
cursor) that passes the filter itself, read from the copies as a top-n read. Then the page: the
roots starting at or after the edge, of the traces with a matching span among the traces with a
stored copy starting at or after it (read from the copies, as is the matching when the filter
names only what every copy of a span holds alike: the window, the projects, the pin).

Exact for any edge: the edge is judged on each root's newest copy under the pin
(`Store.on_newest_copy`), not on its copies, which writers that raced before the write turns may
have left with two start times (docs/scale.md, "Each span once"); the copies are narrowed first
by the traces' bound alone, which every copy of a span shares. Every root left out starts before
the edge, so it sorts after every root kept, and a full page (`limit + 1` roots) of those kept
is the page. The traces' own bound (a copy starting at or after the edge) leaves out no trace a
kept root belongs to: that root's newest copy under the pin is such a copy. A filter on what
every copy holds alike is passed by a span's newest copy exactly when it is passed by one of its
copies, so reading the matching traces from the copies changes no answer. A trace whose root
arrived after the pin has no copy under it (the edge, the page and the traces' bound all read
under the pin), so it stays off the walk; a trace that grows while paged keeps its root's start
and its pinned totals.
"""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import literal
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import store_for
from observatory_core.storage.stores._copies import same_in_every_copy
from observatory_core.traces.cursor import Cursor
from observatory_core.traces.paging import position_time

# Stored root copies per root wanted, then a longer stretch when the first held too few
# matching traces' roots (copies, a filter its roots do not pass themselves); then the plain read.
STRETCH_PER_ROW = (4, 32)


def traces_matching(conn: Connection, scope: Scope, where: list) -> Select:
    """The ids of the traces with a span passing `where` (for a `trace_id IN`). A filter on what
    every copy of a span holds alike (the window, the projects, the pin: `same_in_every_copy`)
    is passed by a span's newest copy exactly when it is passed by one of its copies, so the
    span store then reads them from the copies, without picking each span's newest copy."""
    matching = scoped_spans(scope, spans.c.trace_id).where(*where)
    store = store_for(conn)
    if store.pages_by_prefix and all(same_in_every_copy(c) for c in where):
        return store.span_copies(matching)
    return matching


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
        copies = copies.where(key <= literal(position_time(position), type_=key.type))
    for per_row in STRETCH_PER_ROW:
        stretch = copies.order_by(key.desc()).limit(1).offset(per_row * (limit + 1) - 1)
        edge = conn.execute(store.span_copies(stretch)).scalar()
        if edge is None:  # the rest of the window holds fewer: roots may start before it
            return None
        edge = literal(edge if edge.tzinfo else edge.replace(tzinfo=UTC), type_=key.type)
        reaching = store.span_copies(
            scoped_spans(scope, spans.c.trace_id).where(key >= edge, pinned)
        )
        matching = traces_matching(conn, scope, [*where, spans.c.trace_id.in_(reaching)])
        # the edge judged on each root's newest copy (an older one may start elsewhere), the
        # traces' bound, shared by every copy, narrowing the copies first
        bounded = roots.where(store.on_newest_copy(key >= edge), spans.c.trace_id.in_(matching))
        page = conn.execute(bounded.order_by(key.desc(), spans.c.id.desc()).limit(limit + 1))
        rows = [dict(r) for r in page.mappings()]
        if len(rows) > limit:
            return rows
    return None
