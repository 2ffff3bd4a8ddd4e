"""Filtered lists of spans or of whole traces, sorted, keyset-paginated, scoped.

Pages are stable: the first page pins the time window and the newest span id, and every
later page reads under the same pin, so spans arriving meanwhile neither shift nor repeat rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.engine import Connection, Engine

from observatory_core.errors import UserError
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.permissions import Permission
from observatory_core.scope import Scope, scoped_spans, span_conditions
from observatory_core.storage.schema import spans, trace_totals
from observatory_core.traces.cursor import Cursor, decode_cursor
from observatory_core.traces.fields import KEY_FIELDS, resolve_fields

SORTS = ("start_time", "duration_ms", "total_cost_usd", "total_tokens")
ROOT_SORTS = ("start_time", "duration_ms")  # in traces mode these are the root's own values
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


def _after(key, last_id, cursor: Cursor):
    value = cursor.value
    if isinstance(key.type, type(spans.c.start_time.type)) and isinstance(value, str):
        value = datetime.fromisoformat(value)
    # Bind with the column's own type: inside tuple_() SQLAlchemy would fall back to the
    # impl type, and SQLite would compare integer microseconds with a date string.
    here = tuple_(literal(value, type_=key.type), literal(cursor.last_id, type_=last_id.type))
    if cursor.direction == "desc":
        return tuple_(key, last_id) < here
    return tuple_(key, last_id) > here


def _cursor_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


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
            max_id = conn.execute(select(func.coalesce(func.max(spans.c.id), 0))).scalar_one()
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
    where = _where(engine, spec, as_of, max_id)
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


def _where(engine: Engine, spec: FilterSpec, as_of: datetime, max_id: int) -> list:
    """The filter at the pinned time, minus spans that arrived after the pin."""
    return [*filter_conditions(spec, as_of, engine.dialect.name), spans.c.id <= max_id]


def count_spans(
    engine: Engine, scope: Scope, spec: FilterSpec, *, as_of: datetime, max_id: int
) -> int:
    query = scoped_spans(scope, func.count()).where(*_where(engine, spec, as_of, max_id))
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def _tree_totals(scope: Scope, which, max_id: int):
    """Per trace: cost, tokens, span and error counts over the whole tree."""
    return (
        scoped_spans(
            scope,
            spans.c.trace_id.label("t_id"),
            func.sum(spans.c.total_cost_usd).label("t_cost"),
            func.sum(spans.c.total_tokens).label("t_tokens"),
            func.count().label("t_spans"),
            func.sum(case((spans.c.status == "error", 1), else_=0)).label("t_errors"),
        )
        .where(which, spans.c.id <= max_id)
        .group_by(spans.c.trace_id)
        .subquery()
    )


def _page_end(rows, limit, sort, direction, as_of, max_id):
    """Trim the look-ahead row and make the next cursor from the last row kept."""
    more = len(rows) > limit
    rows = rows[:limit]
    if not more:
        return rows, None
    last = rows[-1]
    return rows, Cursor(
        sort, direction, _cursor_value(last[sort]), last["id"], as_of.isoformat(), max_id
    ).encode()


def _read_roots(
    conn: Connection,
    scope: Scope,
    where: list,
    wanted: tuple[str, ...],
    *,
    sort: str,
    direction: str,
    limit: int,
    position: Cursor | None,
    as_of: datetime,
    max_id: int,
    count: bool,
) -> tuple[list[dict], str | None, int | None]:
    """Traces sorted by a root column: page through roots first, then total only that page.

    Aggregating every matching trace before sorting cost ~1 s at 1M spans; walking the
    roots index and totalling 50 trees is what a first page needs.
    """
    matching = scoped_spans(scope, spans.c.trace_id).where(*where)
    roots = scoped_spans(scope, *(spans.c[f] for f in wanted)).where(
        spans.c.parent_span_id.is_(None), spans.c.trace_id.in_(matching), spans.c.id <= max_id
    )
    key = spans.c[sort]
    if position:
        roots = roots.where(_after(key, spans.c.id, position))
    order = (
        (key.desc(), spans.c.id.desc()) if direction == "desc" else (key.asc(), spans.c.id.asc())
    )
    rows = [dict(r) for r in conn.execute(roots.order_by(*order).limit(limit + 1)).mappings()]
    rows, next_cursor = _page_end(rows, limit, sort, direction, as_of, max_id)
    ids = [r["trace_id"] for r in rows]
    tree = _tree_totals(scope, spans.c.trace_id.in_(ids), max_id)
    totals = {t[0]: t[1:] for t in conn.execute(select(tree))} if ids else {}
    total = None
    if count:
        counter = scoped_spans(scope, func.count()).where(
            spans.c.parent_span_id.is_(None),
            spans.c.trace_id.in_(matching),
            spans.c.id <= max_id,
        )
        total = conn.execute(counter).scalar_one()
    for r in rows:
        cost, tokens, n_spans, n_errors = totals[r["trace_id"]]
        r.update(span_count=n_spans, error_count=n_errors)
        if "total_cost_usd" in r:
            r["total_cost_usd"] = cost
        if "total_tokens" in r:
            r["total_tokens"] = tokens
    return rows, next_cursor, total


def _summed(scope: Scope, which):
    """Per trace: its trace_totals rows (one per project) added up, for the traces `which` picks."""
    t = trace_totals
    return (
        select(
            t.c.trace_id,
            func.max(t.c.root_id).label("root_id"),
            func.sum(t.c.total_cost_usd).label("total_cost_usd"),
            cast(func.sum(t.c.total_tokens), BigInteger).label("total_tokens"),
            cast(func.sum(t.c.span_count), BigInteger).label("span_count"),
            cast(func.sum(t.c.error_count), BigInteger).label("error_count"),
            func.max(t.c.max_span_id).label("newest"),
        )
        .where(*span_conditions(scope, t), which)
        .group_by(t.c.trace_id)
    )


def _only_when(spec: FilterSpec) -> bool:
    """True when the filter only says when (and in which projects): trace_totals can answer it."""
    default = FilterSpec(relative=None)
    return all(
        getattr(spec, name) == getattr(default, name)
        for name in type(spec).__dataclass_fields__
        if name not in ("relative", "start", "end", "project_ids")
    )


def _totals_by_window(scope: Scope, spec: FilterSpec, where: list, as_of: datetime, max_id: int):
    """Traces with a span in the window, from trace_totals' first/last start (one index range)
    instead of grouping every span in the window.

    A row whose spans all lie inside the window (and before the pin) matches outright; one that
    only overlaps it is confirmed by looking for a matching span. A trace with spans in several
    projects (`shared`) is summed over all of its rows, as in the general path.
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
        .exists()
    )
    matches = [*span_conditions(scope, t), *overlaps, or_(and_(*inside), confirmed)]
    alone = select(
        t.c.trace_id,
        t.c.root_id,
        t.c.total_cost_usd,
        cast(t.c.total_tokens, BigInteger).label("total_tokens"),
        cast(t.c.span_count, BigInteger).label("span_count"),
        cast(t.c.error_count, BigInteger).label("error_count"),
        t.c.max_span_id.label("newest"),
    ).where(*matches, t.c.shared.is_(False))
    shared = select(t.c.trace_id).where(*matches, t.c.shared.is_(True))
    return union_all(alone, _summed(scope, t.c.trace_id.in_(shared))).subquery("per_trace")


def _read_by_tree(
    conn: Connection,
    scope: Scope,
    spec: FilterSpec,
    where: list,
    wanted: tuple[str, ...],
    *,
    sort: str,
    direction: str,
    limit: int,
    position: Cursor | None,
    as_of: datetime,
    max_id: int,
    count: bool,
) -> tuple[list[dict], str | None, int | None]:
    """Traces sorted by a tree total (cost, tokens), from the maintained `trace_totals`.

    A trace that received spans after the page's pin has its totals recomputed from the
    spans under the pin, so pages stay stable while spans arrive.
    """
    if _only_when(spec):
        per_trace = _totals_by_window(scope, spec, where, as_of, max_id)
    else:
        matching = scoped_spans(scope, spans.c.trace_id).where(*where)
        per_trace = _summed(scope, trace_totals.c.trace_id.in_(matching)).subquery("per_trace")
    p = per_trace.c

    def pinned(column: str, value):
        exact = (
            scoped_spans(scope, value)
            .where(spans.c.trace_id == p.trace_id, spans.c.id <= max_id)
            .scalar_subquery()
        )
        value = case((p.newest <= max_id, p[column]), else_=exact)
        return value if column == "total_cost_usd" else cast(value, BigInteger)

    is_error = case((spans.c.status == "error", 1), else_=0)
    totals = {
        "total_cost_usd": pinned("total_cost_usd", func.sum(spans.c.total_cost_usd)),
        "total_tokens": pinned("total_tokens", func.sum(spans.c.total_tokens)),
        "span_count": pinned("span_count", func.count()),
        "error_count": pinned("error_count", func.sum(is_error)),
    }
    key = totals[sort]
    query = select(p.trace_id, p.root_id, *(v.label(k) for k, v in totals.items())).where(
        p.root_id.is_not(None), p.root_id <= max_id
    )
    if position:
        query = query.where(_after(key, p.root_id, position))
    order = (key.desc(), p.root_id.desc()) if direction == "desc" else (key.asc(), p.root_id.asc())
    ranked = [dict(r) for r in conn.execute(query.order_by(*order).limit(limit + 1)).mappings()]
    ids = [r["root_id"] for r in ranked]
    roots = scoped_spans(scope, *(spans.c[f] for f in wanted)).where(spans.c.id.in_(ids))
    by_id = {r["id"]: dict(r) for r in conn.execute(roots).mappings()} if ids else {}
    total = None
    if count:
        total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = []
    for r in ranked:
        root = by_id.get(r["root_id"])
        if root is None:  # the root row went away (deleted): nothing to show for this trace
            continue
        root.update(span_count=r["span_count"], error_count=r["error_count"])
        for name in ("total_cost_usd", "total_tokens"):
            if name in root or name == sort:
                root[name] = r[name]
        rows.append(root)
    return _page_end(rows, limit, sort, direction, as_of, max_id) + (total,)


# SQLite keeps no histograms, so for "sort by duration (or cost)" it takes the filter's index,
# reads every matching row (tens of thousands of large rows for a 30-day model filter) and
# sorts them. Walking the sort's own index first, over a bounded stretch, finds a first page
# of a broad filter in milliseconds; a filter too narrow for that stretch takes the usual plan.
_WALK_INDEX = {"duration_ms": "ix_spans_org_duration", "total_cost_usd": "ix_spans_org_cost"}
_WALK_PER_ROW = 100  # index entries walked per row wanted


def _walk_sort_index(conn, scope, query, key, order, direction, limit, position):
    """The page from the first `_WALK_PER_ROW * (limit + 1)` entries of the sort's index (after
    the cursor), or None when that stretch holds too few matches to be sure of the page.

    Exact: every span beyond the stretch sorts after its last entry, so when the stretch holds
    a full page, that page is the first `limit + 1` matches overall.
    """
    hint = f"INDEXED BY {_WALK_INDEX[key.name]}"
    stretch = scoped_spans(scope, key).with_hint(spans, hint, "sqlite")
    if position:
        stretch = stretch.where(_after(key, spans.c.id, position))
    edge = stretch.order_by(*order).limit(1).offset(_WALK_PER_ROW * (limit + 1)).scalar_subquery()
    within = key >= edge if direction == "desc" else key <= edge
    bounded = query.with_hint(spans, hint, "sqlite").where(within)
    rows = [dict(r) for r in conn.execute(bounded.order_by(*order).limit(limit + 1)).mappings()]
    return rows if len(rows) > limit else None


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
) -> tuple[list[dict], str | None, int | None]:
    where = _where(conn, spec, as_of, max_id)

    wanted = tuple(dict.fromkeys((*KEY_FIELDS, *shown)))
    columns = [spans.c[f] for f in wanted]
    if mode == "spans":
        key = spans.c[sort]
        query = scoped_spans(scope, *columns).where(*where)
        counter = scoped_spans(scope, func.count()).where(*where)
    elif sort in ROOT_SORTS:
        return _read_roots(
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
    else:
        return _read_by_tree(
            conn,
            scope,
            spec,
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
    if position:
        query = query.where(_after(key, spans.c.id, position))
    order = (
        (key.desc(), spans.c.id.desc()) if direction == "desc" else (key.asc(), spans.c.id.asc())
    )
    rows = None
    if conn.dialect.name == "sqlite" and sort in _WALK_INDEX:
        rows = _walk_sort_index(conn, scope, query, key, order, direction, limit, position)
    if rows is None:
        rows = [dict(r) for r in conn.execute(query.order_by(*order).limit(limit + 1)).mappings()]
    total = conn.execute(counter).scalar_one() if count else None
    rows, next_cursor = _page_end(rows, limit, sort, direction, as_of, max_id)
    return rows, next_cursor, total
