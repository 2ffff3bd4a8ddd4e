"""Traces mode sorted by a tree total (cost, tokens, duration from the earliest start to the
latest end): the traces ranked by their maintained `trace_totals`, pinned, then their roots.

Split from `traces/trace_lists.py` (the list by the root's start, and the totals' pieces both
use) at the ranking's seam.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.accounts.scope import Scope, scoped_spans, span_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.clickhouse.trace_totals import (
    ROOT_ROWS,
    latest_root_of,
    partial_rows,
    roots_arrived_by,
    summed_per_trace,
)
from observatory_core.storage.dialect import arrival_order, epoch_us, nano_dollars
from observatory_core.storage.schema import is_shared, spans, trace_totals
from observatory_core.storage.stores import store_for
from observatory_core.traces.cursor import Cursor
from observatory_core.traces.fields import field_column
from observatory_core.traces.paging import after, page_end
from observatory_core.traces.root_stretches import traces_matching
from observatory_core.traces.trace_lists import summed_totals, window_matches


def _summed_matching(conn: Connection, scope: Scope, matching) -> Select:
    """`summed_totals` of the traces `matching` selects. On a store whose `trace_totals` is a
    grouping of partial rows when read (`Store.groups_trace_totals`), those rows are added up
    once per trace (`storage/clickhouse/trace_totals.summed_per_trace`), not grouped by
    project with `shared`'s window first and by trace again."""
    if store_for(conn).groups_trace_totals:
        rows = partial_rows
        return summed_per_trace(span_conditions(scope, rows), matching)
    return summed_totals(scope, trace_totals.c.trace_id.in_(matching))


def _summed_with_root_rows(conn: Connection, scope: Scope, matching) -> Select | None:
    """`_summed_matching`'s sums with each trace's rows that hold a root in place of its root
    (`summed_per_trace(..., root_rows=True)`), for a first page's ranking (`_first_of_stored`);
    None on a store that keeps whole rows."""
    if not store_for(conn).groups_trace_totals:
        return None
    return summed_per_trace(span_conditions(scope, partial_rows), matching, root_rows=True)


def _totals_by_window(
    scope: Scope,
    spec: FilterSpec,
    where: list,
    as_of: datetime,
    max_id: int,
    top: _Top | None = None,
):
    """Per trace with a span in the window, its totals from trace_totals (`window_matches`). A
    trace with spans in several projects (`shared`) is summed over all of its rows, as in the
    general path. `top`: only the single-project traces whose stored key reaches the walk's
    edge, read through the key's index, and those that received spans after the pin (their
    key is recomputed under it, `read_by_tree`)."""
    t = trace_totals
    matches = window_matches(scope, spec, where, as_of, max_id)
    columns = (
        t.c.trace_id,
        t.c.root_id,
        arrival_order(t.c.root_id).label("root_arrival"),
        t.c.total_cost_usd,
        cast(t.c.total_tokens, BigInteger).label("total_tokens"),
        cast(t.c.span_count, BigInteger).label("span_count"),
        cast(t.c.error_count, BigInteger).label("error_count"),
        t.c.max_span_id.label("newest"),
        t.c.first_start,
        t.c.last_end,
    )
    single = [*matches, t.c.shared.is_(False)]
    if top is None:
        parts = [select(*columns).where(*single)]
    else:
        late = scoped_spans(scope, spans.c.trace_id).where(arrival_order(spans.c.id) > max_id)
        upper = select(*columns).where(*single, top.key >= top.edge, t.c.trace_id.not_in(late))
        parts = [top.hint(upper), select(*columns).where(*single, t.c.trace_id.in_(late))]
    shared = select(t.c.trace_id).where(*matches, is_shared(t))
    return union_all(*parts, summed_totals(scope, t.c.trace_id.in_(shared))).subquery("per_trace")


# The tree-total sorts' indexes on trace_totals (migration 0024), walked from the top, and the
# entries walked per row wanted: a 7-day window holds about one trace in five of 30 days of data.
_TREE_INDEX = {
    "total_cost_usd": "ix_trace_totals_org_cost",
    "total_tokens": "ix_trace_totals_org_tokens",
    "duration_ms": "ix_trace_totals_org_extent",
}
_TREE_WALK_PER_ROW = 20


@dataclass(frozen=True)
class _Top:
    key: ColumnElement  # the sort's stored key on trace_totals, as its index holds it
    edge: float | int  # the key of the walk's last entry
    hint: Callable  # a select -> the same select reading trace_totals through the key's index


def _stored_key(sort: str) -> ColumnElement:
    """The key of a tree-total sort as trace_totals stores it (duration: the extent in
    microseconds, on a store that keeps times as integer microseconds)."""
    t = trace_totals
    if sort == "duration_ms":
        return type_coerce(t.c.last_end, BigInteger) - type_coerce(t.c.first_start, BigInteger)
    return t.c[sort]


def _walk_edge(conn: Connection, scope: Scope, sort: str, limit: int) -> _Top | None:
    """The walk over the first `_TREE_WALK_PER_ROW * (limit + 1)` entries of the sort's index
    (descending), or None when the scope holds fewer (or the last one has no key)."""
    store = store_for(conn)
    key = _stored_key(sort)
    stretch = store.index_hint(
        select(key).where(*span_conditions(scope, trace_totals)), trace_totals, _TREE_INDEX[sort]
    )
    stretch = stretch.order_by(key.desc()).limit(1).offset(_TREE_WALK_PER_ROW * (limit + 1))
    edge = conn.execute(stretch).scalar()
    if edge is None:
        return None

    def hint(query):
        return store.index_hint(query, trace_totals, _TREE_INDEX[sort])

    return _Top(key, edge, hint)


def _reaches(value, sort: str, top: _Top) -> bool:
    """Whether a listed row's key is at or above the walk's edge (in the list's units)."""
    edge = top.edge / 1000.0 if sort == "duration_ms" else top.edge  # extent: us -> ms
    if sort == "total_cost_usd":  # listed in whole nano-dollars: past the edge by one at least
        edge += 1e-9
    return value is not None and value >= edge


def read_by_tree(
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
) -> tuple[list[dict], str | None, int | None]:
    """Traces sorted by a tree total (cost, tokens, duration from the earliest start to the
    latest end), from the maintained `trace_totals`.

    A trace that received spans after the page's pin has its totals recomputed from the
    spans under the pin, so pages stay stable while spans arrive.
    """
    # trace_totals has time and project only; its rows are matched to the window by a probe
    # per row (`window_matches`), which a store without row indexes does not take
    by_window = spec.only_uses({"project_ids"}) and store_for(conn).correlated_reads
    top = None
    # Every store: no planner sees through the pinned key (a CASE over a union) to the index.
    # The extent is walked where times are integer microseconds (its index's expression).
    if (
        by_window
        and position is None
        and direction == "desc"
        and not count
        and (sort != "duration_ms" or store_for(conn).timestamps_as_micros)
    ):
        top = _walk_edge(conn, scope, sort, limit)
    ranked, summed = None, None
    if top is not None:
        per_trace = _totals_by_window(scope, spec, where, as_of, max_id, top)
        ranked, _ = _rank(conn, scope, per_trace, sort, direction, limit, position, max_id)
        # Exact when the page's last row reaches the edge: every trace left out has a smaller
        # key (its stored key is below the edge, and it received no span after the pin).
        if len(ranked) <= limit or not _reaches(ranked[-1][sort], sort, top):
            ranked = None
    if ranked is None:
        if by_window:
            per_trace = _totals_by_window(scope, spec, where, as_of, max_id)
        else:
            matching = traces_matching(conn, scope, where)
            per_trace = _summed_matching(conn, scope, matching).subquery("per_trace")
            summed = _summed_with_root_rows(conn, scope, matching)
        ranked, query = _rank(
            conn, scope, per_trace, sort, direction, limit, position, max_id, summed
        )
    ids = [r["root_id"] for r in ranked]
    roots = scoped_spans(scope, *(field_column(f) for f in wanted)).where(
        spans.c.id.in_(ids),
        # the same rows; the span store keeps no id to look up, its trace ids are indexed
        spans.c.trace_id.in_([r["trace_id"] for r in ranked]),
    )
    roots = roots.execution_options(block_cache=True)
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
        for name in ("total_cost_usd", "total_tokens", "duration_ms"):
            if name in root or name == sort:
                root[name] = r[name]
        rows.append(root)
    return page_end(rows, limit, sort, direction, as_of, max_id) + (total,)


def _extent(first, last):
    """Milliseconds from the earliest start to the latest end."""
    return (epoch_us(last) - epoch_us(first)) / 1000.0


def _stored(p) -> dict:
    """The totals as stored, from a per-trace row's columns `p`."""
    return {
        "total_cost_usd": p.total_cost_usd,
        "total_tokens": p.total_tokens,
        "span_count": p.span_count,
        "error_count": p.error_count,
        "duration_ms": _extent(p.first_start, p.last_end),
    }


def _as_key(name: str, value):
    """A total as the list sorts and shows it."""
    if name == "total_cost_usd":  # the stored and the recomputed sum: one key (dialect.py)
        return nano_dollars(value)
    return value if name == "duration_ms" else cast(value, BigInteger)


_STALE = "written_since_pin"


def _first_of_stored(summed: Select, sort: str, direction: str, limit: int, max_id: int):
    """A first page's ranking (and one more) by the stored totals, the traces written to
    since the pin first (`_STALE`), among the traces whose roots had arrived by the pin
    (`roots_arrived_by`), from `summed` (`_summed_with_root_rows`): ranked by the key alone
    and cut after the `limit + 1`-th with its ties (`WITH TIES`); only those read their root
    from their root rows (`latest_root_of`), which breaks the ties and cuts the page. The same
    page as ranking every trace by key and root: every trace the cut leaves out sorts after
    the `limit + 1`-th by its key alone. Reading each root from its rows' per-project maps for
    every trace in the window cost about a fifth of the statement
    (docs/span-store-internals.md, "Traces mode")."""
    s = summed.subquery("summed")
    totals = {name: _as_key(name, value) for name, value in _stored(s.c).items()}
    stale = or_(s.c.newest > max_id, s.c.newest.is_(None)).label(_STALE)
    key = totals[sort]
    top = (
        select(s.c.org_id, s.c.trace_id, s.c[ROOT_ROWS], stale)
        .add_columns(*(value.label(name) for name, value in totals.items()))
        # a trace listed has a root, arrived by the pin
        .where(func.notEmpty(s.c[ROOT_ROWS]), literal_column(roots_arrived_by("summed", max_id)))
        .order_by(stale.desc(), key.desc() if direction == "desc" else key.asc())
        .limit(limit + 1)
        .suffix_with("WITH TIES")
        .subquery("first_ranked")
    )
    latest = literal_column(latest_root_of("first_ranked"))
    root_id = func.tupleElement(latest, 2).label("root_id")
    ranked = select(top.c.trace_id, root_id, *(top.c[name] for name in totals), top.c[_STALE])
    t, k = top.c[_STALE], top.c[sort]
    order = (k.desc(), root_id.desc()) if direction == "desc" else (k.asc(), root_id.asc())
    return ranked, (t.desc(), *order)


def _rank(conn, scope, per_trace, sort, direction, limit, position, max_id, summed=None):
    """The page's traces (and one more) from `per_trace`, by their pinned totals; the rows
    and the query (for its count). `summed`: the same sums with each trace's root rows
    (`_summed_with_root_rows`), for a first page ranked by the stored totals.

    A trace that received spans after the pin has its totals recomputed from its spans under
    the pin: per row, where that is an index probe (`Store.correlated_reads`), else from one
    grouped read of the traces written to since the pin, joined."""
    p = per_trace.c
    is_error = case((spans.c.status == "error", 1), else_=0)
    recomputed = {
        "total_cost_usd": func.sum(spans.c.total_cost_usd),
        "total_tokens": func.sum(spans.c.total_tokens),
        "span_count": func.count(),
        "error_count": func.sum(is_error),
        "duration_ms": _extent(func.min(spans.c.start_time), func.max(spans.c.end_time)),
    }
    stored = _stored(p)
    under_pin = (arrival_order(spans.c.id) <= max_id, counted(spans.c))
    source = per_trace
    if store_for(conn).correlated_reads:
        exact = {
            name: scoped_spans(scope, value)
            .where(spans.c.trace_id == p.trace_id, *under_pin)
            .scalar_subquery()
            for name, value in recomputed.items()
        }
    else:
        late = traces_matching(conn, scope, [arrival_order(spans.c.id) > max_id])
        grouped = (
            scoped_spans(
                scope,
                spans.c.trace_id.label("late_id"),
                *(value.label(name) for name, value in recomputed.items()),
            )
            .where(spans.c.trace_id.in_(late), *under_pin)
            .group_by(spans.c.trace_id)
            .subquery("late")
        )
        exact = {name: grouped.c[name] for name in recomputed}
        source = per_trace.outerjoin(grouped, grouped.c.late_id == p.trace_id)

    def pinned(name):
        value = case((p.newest <= max_id, stored[name]), else_=exact[name])
        return _as_key(name, value)

    def ranking():
        totals = {name: pinned(name) for name in stored}
        key = totals[sort]
        query = (
            select(p.trace_id, p.root_id, *(v.label(k) for k, v in totals.items()))
            .select_from(source)
            .where(p.root_id.is_not(None), p.root_arrival <= max_id)
        )
        if position:
            query = query.where(after(key, p.root_id, position))
        by_key = (
            (key.desc(), p.root_id.desc()) if direction == "desc" else (key.asc(), p.root_id.asc())
        )
        return query, by_key

    def read(query, order) -> list[dict]:
        # one thread where the store runs in this process (chDB): the grouping's many small
        # groups cost more CPU split over threads than they save (`storage/clickhouse/sql.py`)
        page = query.order_by(*order).limit(limit + 1)
        # read through the engine's block cache (`storage/clickhouse/sql.py`, `_asked`)
        page = page.execution_options(one_thread=True, block_cache=True)
        return [dict(r) for r in conn.execute(page).mappings()]

    query, order = ranking()
    if position is None and not store_for(conn).correlated_reads:  # the late traces joined
        # A first page, pinned at the write clock's now: a trace written to since is rare (a
        # write racing this read). The stored totals ranked with such traces first: when the
        # first is not one, none is, and the stored totals are the pinned ones
        # (docs/span-store-internals.md, "Traces mode")
        # ranked by key, the roots read for the first traces only: such a store groups its
        # trace totals when read (`Store.groups_trace_totals`), so `summed` is given
        ranked = read(*_first_of_stored(summed, sort, direction, limit, max_id))
        if not any(r.pop(_STALE) for r in ranked):
            return ranked, query
    return read(query, order), query
