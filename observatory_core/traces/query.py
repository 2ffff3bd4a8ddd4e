"""Filtered lists of spans or of whole traces, sorted, keyset-paginated, scoped.

Pages are stable: the first page pins the time window and the newest span id, and every
later page reads under the same pin, so spans arriving meanwhile neither shift nor repeat rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import DateTime, func, literal, tuple_, type_coerce
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import visitors

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.accounts.visibility import require_fields, require_filters, visible
from observatory_core.base.errors import UserError
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.dialect import arrival_order, text_search
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import store_for
from observatory_core.traces.cursor import Cursor, decode_cursor
from observatory_core.traces.fields import KEY_FIELDS, field_column, resolve_fields
from observatory_core.traces.paging import after, page_end, position_time
from observatory_core.traces.trace_lists import read_roots
from observatory_core.traces.tree_ranking import read_by_tree

SORTS = ("start_time", "duration_ms", "total_cost_usd", "total_tokens")


def sorts_for(scope: Scope) -> tuple[str, ...]:
    """The sort keys the caller's role may use (the Traces page offers only these)."""
    return visible(scope, SORTS)


ROOT_SORTS = ("start_time",)  # in traces mode the root's start; other sorts are tree totals
MAX_PAGE = 1000
TRACE_TOTALS = ("span_count", "error_count")


@dataclass(frozen=True)
class Page:
    rows: list[dict]
    fields: tuple[str, ...]
    next_cursor: str | None
    as_of: datetime
    total: int | None  # only when asked for


def _check(sort: str, direction: str, limit: int) -> None:
    if sort not in SORTS:
        raise UserError(f"Cannot sort by {sort!r}; choose from {', '.join(SORTS)}.")
    if direction not in ("asc", "desc"):
        raise UserError(f"Sort direction {direction!r} must be 'asc' or 'desc'.")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise UserError(f"Page size must be a whole number from 1 to {MAX_PAGE}, got {limit!r}.")


def list_spans(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    mode: str = "spans",
    sort: str = "start_time",
    direction: str = "desc",
    limit: int = 50,
    cursor: str | None = None,
    fields: tuple[str, ...] | list[str] | None = None,
    count: bool = False,
    now: datetime | None = None,
) -> Page:
    """One page of spans (`mode="spans"`) or of traces by their root (`mode="traces"`).

    In traces mode a trace is listed when any of its spans matches the filter, and
    total_cost_usd / total_tokens, span_count and error_count cover the whole tree.
    """
    scope.require(Permission.TRACES_READ)
    if mode not in ("spans", "traces"):
        raise UserError(f"List mode {mode!r} must be 'spans' or 'traces'.")
    _check(sort, direction, limit)
    # A hidden sort key would order rows by values the caller may not see (and the page's
    # cursor would carry them); a hidden filter would let them be bisected out.
    require_fields(scope, (sort,), "sort by")
    require_filters(scope, spec)
    shown = resolve_fields(scope, fields)
    position = decode_cursor(cursor, sort, direction) if cursor else None
    if position:
        as_of, max_id = position.as_of_time, position.max_id
    else:
        as_of = now or datetime.now(UTC)
    # One connection, no transaction: a first page is two or three reads, and each checkout
    # or BEGIN/ROLLBACK would be another round trip to the database.
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        if position is None:
            max_id = newest_pin(conn)
        rows, next_cursor, total = _read(
            conn,
            scope,
            spec,
            mode=mode,
            sort=sort,
            direction=direction,
            limit=limit,
            position=position,
            shown=shown,
            as_of=as_of,
            max_id=max_id,
            count=count,
        )
    out_fields = shown + (TRACE_TOTALS if mode == "traces" else ())
    return Page(rows, out_fields, next_cursor, as_of, total)


def iter_span_pages(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    fields: tuple[str, ...],
    as_of: datetime,
    max_id: int,
    page_size: int = 5000,
) -> Iterator[list[dict]]:
    """Every matching span, oldest first, page by page: the explorer's query, for exports."""
    require_filters(scope, spec)
    require_fields(scope, fields, "export")
    position = None
    while True:
        with engine.connect() as conn:  # one per page: a long export holds none between pages
            rows, next_cursor, _ = _read(
                conn,
                scope,
                spec,
                mode="spans",
                sort="start_time",
                direction="asc",
                limit=page_size,
                position=position,
                shown=fields,
                as_of=as_of,
                max_id=max_id,
                floor=True,
            )
        if rows:
            yield rows
        if next_cursor is None:
            return
        position = decode_cursor(next_cursor, "start_time", "asc")


def iter_span_ids(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    as_of: datetime,
    max_id: int,
    page_size: int = 20_000,
) -> Iterator[list[int]]:
    """Ids of every matching span, oldest first, in keyset pages: the export fast path.

    The same filter as the lists; only (start_time, id) come back, without per-row type
    processing, so a page of 20k keys costs a few milliseconds.
    """
    require_filters(scope, spec)
    where = pinned_conditions(engine, spec, as_of, max_id)
    start = type_coerce(spans.c.start_time, DateTime(timezone=True)).label("k")
    last: tuple | None = None
    with engine.connect() as conn:
        while True:
            query = scoped_spans(scope, spans.c.id, start).where(*where)
            if last is not None:
                here = tuple_(literal(last[0], type_=spans.c.start_time.type), literal(last[1]))
                query = query.where(tuple_(spans.c.start_time, spans.c.id) > here)
            rows = conn.execute(
                query.order_by(spans.c.start_time, spans.c.id).limit(page_size)
            ).all()
            if not rows:
                return
            yield [r[0] for r in rows]
            last = (rows[-1][1], rows[-1][0])


def newest_pin(conn: Connection) -> int:
    """The pin of a first page: the newest span's arrival (its id; the write's clock where ids
    do not grow, `storage.dialect.arrival_order`)."""
    return store_for(conn).newest_arrival(conn)


def pinned_conditions(engine: Engine, spec: FilterSpec, as_of: datetime, max_id: int) -> list:
    """The filter at the pinned time, minus spans that arrived after the pin (the list, its
    count and its days, `traces/days.py`, read the same)."""
    return [
        *filter_conditions(spec, as_of, store_for(engine).name),
        arrival_order(spans.c.id) <= max_id,
    ]


def count_spans(
    engine: Engine, scope: Scope, spec: FilterSpec, *, as_of: datetime, max_id: int
) -> int:
    require_filters(scope, spec)
    query = scoped_spans(scope, func.count()).where(*pinned_conditions(engine, spec, as_of, max_id))
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


# SQLite keeps no histograms, so for "sort by duration (or cost)" it takes the filter's index,
# reads every matching row (tens of thousands of large rows for a 30-day model filter) and
# sorts them. Walking the sort's own index first, over a bounded stretch, finds a first page
# of a broad filter in milliseconds; a filter too narrow for that stretch takes the usual plan.
_WALK_INDEX = {
    "duration_ms": "ix_spans_org_duration",
    "total_cost_usd": "ix_spans_org_cost",
    "total_tokens": "ix_spans_org_tokens",  # migration 0020
}
_WALK_PER_ROW = 100  # index entries walked per row wanted


def _walk_sort_index(conn, scope, query, key, order, direction, limit, position):
    """The page from the first `_WALK_PER_ROW * (limit + 1)` entries of the sort's index (after
    the cursor), or None when that stretch holds too few matches to be sure of the page.

    Exact: every span beyond the stretch sorts after its last entry, so when the stretch holds
    a full page, that page is the first `limit + 1` matches overall.
    """
    store, index = store_for(conn), _WALK_INDEX[key.name]
    stretch = store.index_hint(scoped_spans(scope, key), spans, index)
    if position:
        stretch = stretch.where(after(key, spans.c.id, position))
    edge = stretch.order_by(*order).limit(1).offset(_WALK_PER_ROW * (limit + 1)).scalar_subquery()
    within = key >= edge if direction == "desc" else key <= edge
    bounded = store.index_hint(query, spans, index).where(within)
    rows = [dict(r) for r in conn.execute(bounded.order_by(*order).limit(limit + 1)).mappings()]
    return rows if len(rows) > limit else None


def _by_prefix(conn: Connection, where: list) -> bool:
    """Whether traces mode's page of roots by start time may be read within a stretch of the
    first stored roots (`traces/root_stretches.py`): on the span store, without the text
    search. Spans mode reads its page in one statement there since schema version 8 (the id
    stored: the engine's top-n over the window took half the time of a stretch's edge and
    page, docs/span-store-internals.md)."""
    searched = any(isinstance(e, text_search) for c in where for e in visitors.iterate(c))
    return store_for(conn).pages_by_prefix and not searched


def _read(
    conn: Connection,
    scope: Scope,
    spec: FilterSpec,
    *,
    mode: str,
    sort: str,
    direction: str,
    limit: int,
    position: Cursor | None,
    shown: tuple[str, ...],
    as_of: datetime,
    max_id: int,
    count: bool = False,
    floor: bool = False,
) -> tuple[list[dict], str | None, int | None]:
    """One page. `floor` (exports, oldest first): the cursor's start time also as a plain
    bound (it changes no answer), one the span store's sorting key and monthly partitions
    narrow the read by directly, where the keyset condition also reads the id: a page then
    reads the spans from the cursor on, not the whole window (`storage/stores/clickhouse.py`;
    `spans` is the stored table there since schema version 8, no copy picked)."""
    where = pinned_conditions(conn, spec, as_of, max_id)

    # The sort key too: the next page's cursor is made from it (it was a KeyError, an HTTP 500,
    # when the asked-for fields left it out). It passed the role check in `list_spans`.
    wanted = tuple(dict.fromkeys((*KEY_FIELDS, sort, *shown)))
    columns = [field_column(f) for f in wanted]
    if mode == "traces":
        if sort in ROOT_SORTS:
            read = partial(read_roots, spec=spec, by_prefix=_by_prefix(conn, where))
        else:
            read = partial(read_by_tree, spec=spec)
        return read(
            conn,
            scope,
            where,
            wanted,
            sort=sort,
            direction=direction,
            limit=limit,
            position=position,
            as_of=as_of,
            max_id=max_id,
            count=count,
        )
    key = spans.c[sort]
    query = scoped_spans(scope, *columns).where(*where)
    counter = scoped_spans(scope, func.count()).where(*where)
    if position:
        query = query.where(after(key, spans.c.id, position))
        if floor and sort == "start_time" and direction == "asc":
            query = query.where(key >= literal(position_time(position), type_=key.type))
    order = (
        (key.desc(), spans.c.id.desc()) if direction == "desc" else (key.asc(), spans.c.id.asc())
    )
    rows = None
    if sort in _WALK_INDEX and store_for(conn).walks_sort_index:
        rows = _walk_sort_index(conn, scope, query, key, order, direction, limit, position)
    if rows is None:
        rows = [dict(r) for r in conn.execute(query.order_by(*order).limit(limit + 1)).mappings()]
    total = conn.execute(counter).scalar_one() if count else None
    rows, next_cursor = page_end(rows, limit, sort, direction, as_of, max_id)
    return rows, next_cursor, total
