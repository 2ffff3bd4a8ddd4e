"""Spans-mode pages by cost, duration or tokens on the span store, read among the spans of a
stretch of the window's first stored copies in the page's order, not after picking the newest
copy of every span of the window (docs/scale.md, "Explorer pages by cost, duration or tokens").

A span's copies may differ in the sort key (a later copy priced, or timed, otherwise), so no
bound on the key may be applied before the newest copy is picked. What every copy holds alike
is the span's identity and start time: the stretch names its spans by their start times, a
condition the store applies first, and the stretch's edge (key, id) is applied after, on the
newest copy.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import literal, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Select

from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import store_for
from observatory_core.traces.cursor import Cursor
from observatory_core.traces.paging import after

# So many stored copies per row wanted; a longer stretch when the first held too few matches
# (copies of the same spans, or spans an older copy matched), then the plain read.
STRETCH_PER_ROW = (4, 32)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def narrowed_page(
    conn: Connection,
    scope: Scope,
    query: Select,
    where: list,
    key: ColumnElement,
    order: tuple,
    direction: str,
    limit: int,
    position: Cursor | None,
) -> list[dict] | None:
    """The page's first `limit + 1` rows (fewer: the rest of the answer), or None when no
    stretch held a full page. `query` is the page's read (newest copies, the cursor applied),
    `where` its conditions, `order` its (key, id) order.

    Exact: the stretch is the first n stored copies, in the page's (key, id) order, that pass
    `where` and lie after the cursor, judged copy by copy; its edge is the last one's (key,
    id). A span whose newest copy passes and sorts at or before the edge has a copy in the
    stretch (that one), so among the stretch's spans (by start time, which every copy holds;
    other spans starting then too are judged like any), their newest copies that pass and sort
    at or before the edge are the page's first rows. A full page of them is the page; a
    stretch shorter than n held every copy that could pass, so its spans are the answer."""
    store, desc = store_for(conn), direction == "desc"
    copy_id = store.span_copies_id()
    copies = scoped_spans(scope, spans.c.start_time, key, copy_id).where(*where)
    if position:
        copies = copies.where(after(key, copy_id, position))
    copies = copies.order_by(*((key.desc(), copy_id.desc()) if desc else (key, copy_id)))
    for per_row in STRETCH_PER_ROW:
        wanted = per_row * (limit + 1)
        stretch = conn.execute(store.span_copies(copies.limit(wanted))).all()
        if not stretch:
            return []
        starts = sorted({_utc(start) for start, _, _ in stretch})
        bounded = query.where(store.starts_among(starts))
        full = len(stretch) == wanted
        if full:
            _, value, last_id = stretch[-1]
            if value is None:  # the key's order for NULLs is the store's own: no bound here
                return None
            edge = tuple_(literal(value, type_=key.type), literal(last_id, type_=spans.c.id.type))
            pair = tuple_(key, spans.c.id)
            bounded = bounded.where(pair >= edge if desc else pair <= edge)
        rows = conn.execute(bounded.order_by(*order).limit(limit + 1)).mappings()
        page = [dict(r) for r in rows]
        if not full or len(page) > limit:
            return page
    return None
