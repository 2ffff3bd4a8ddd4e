"""Exact distinct users and sessions over a time range, mostly from the actor rollups.

Whole days and hours come from `rollup_actors_*`; the ragged edges (under an hour) from spans.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Integer, String, and_, case, func, literal, or_, select, union_all
from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope, span_conditions
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.rollup_segments import plan_segments
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.dialect import actor_pairs
from observatory_core.storage.schema import ACTOR_ROLLUPS, spans
from observatory_core.storage.stores import store_for

_ROLLUP_FILTERS = frozenset({"project_ids"})
ACTOR_FILTERS = _ROLLUP_FILTERS  # the filters the actor rollups answer (`period_actors`)


def _edge_where(scope: Scope, within: list, projects: tuple[int, ...]) -> list:
    """The counted spans of the scope (and `projects`) in any of the `within` time ranges."""
    c = spans.c
    where = [*span_conditions(scope), within[0] if len(within) == 1 else or_(*within), counted(c)]
    if projects:
        where.append(c.project_id.in_(projects))
    return where


def _from_pairs(edges, *tags):
    """(tags..., kind, actor) of a subquery's `pair` column (`dialect.actor_pairs`: users and
    sessions from one read of the spans), the spans without one left out."""
    actor = func.tupleElement(edges.c.pair, 2)
    kind = func.tupleElement(edges.c.pair, 1).label("kind")
    return select(*tags, kind, actor.label("actor")).where(actor.is_not(None))


def _rollup_piece(scope: Scope, grain: str, a: datetime, b: datetime, projects, *tags):
    """(tags..., kind, actor) of the actor rollup of `grain` over [a, b)."""
    t = ACTOR_ROLLUPS[grain]
    where = [*span_conditions(scope, t), t.c.bucket_start >= a, t.c.bucket_start < b]
    if projects:
        where.append(t.c.project_id.in_(projects))
    return select(*tags, t.c.kind, t.c.actor).where(*where)


def _raw(
    scope: Scope,
    ranges: list[tuple[datetime, datetime]],
    projects: tuple[int, ...] = (),
    once: bool = False,
):
    """The actors of the spans in any of `ranges` (one of the window's ragged edges, or all of
    them on a store that reads them together, `Store.ors_time_ranges`); `once`: users and
    sessions from one read of the spans (`Store.reads_actors_once`)."""
    c = spans.c
    where = _edge_where(
        scope, [and_(c.start_time >= a, c.start_time < b) for a, b in ranges], projects
    )
    if once:
        pair = actor_pairs(c.user_id, c.session_id).label("pair")
        return [_from_pairs(select(pair).where(*where).subquery("edges"))]
    return [
        select(literal(kind, String()).label("kind"), column.label("actor")).where(
            *where, column.is_not(None)
        )
        for kind, column in (("user", c.user_id), ("session", c.session_id))
    ]


def distinct_actors(
    engine: Engine,
    scope: Scope,
    start: datetime,
    end: datetime,
    *,
    spec: FilterSpec | None = None,
    now: datetime | None = None,
    force: str | None = None,
) -> dict[str, int]:
    """{"user": distinct user ids, "session": distinct session ids} seen in [start, end) among
    the spans `spec` selects. The actor rollups know only time and project: any other filter
    is answered from the spans, so the counts honour the whole filter like every other figure.
    A store without actor rollups (`Store.actor_rollups`) counts on its spans; the span store
    keeps the hour's alone (`Store.actor_grains`)."""
    if spec is not None and not spec.only_uses(_ROLLUP_FILTERS):
        return _filtered(engine, scope, spec, now)
    store = store_for(engine)
    if not store.actor_rollups:
        window = (spec or FilterSpec(relative=None)).replace(relative=None, start=start, end=end)
        return _filtered(engine, scope, window, now)
    projects = spec.project_ids if spec is not None else ()
    grains = [] if force == "raw" else list(store.actor_grains)
    pieces = []
    edges = [(a, b) for grain, a, b in plan_segments(start, end, grains) if grain is None]
    # the ragged edges in one read where each read is a scan with a statement's fixed cost
    for part in [edges] if store.ors_time_ranges and edges else [[e] for e in edges]:
        pieces += _raw(scope, part, projects, store.reads_actors_once)
    for grain, a, b in plan_segments(start, end, grains):
        if grain is not None:
            pieces.append(_rollup_piece(scope, grain, a, b, projects))
    if not pieces:
        return {"user": 0, "session": 0}
    # DISTINCT first, then count: PostgreSQL hashes the pairs instead of sorting per kind
    u = union_all(*pieces).subquery("u")
    pairs = select(u.c.kind, u.c.actor).distinct().subquery("pairs")
    query = select(pairs.c.kind, func.count()).group_by(pairs.c.kind)
    with engine.connect() as conn:
        found = dict(conn.execute(query).all())
    return {"user": int(found.get("user", 0)), "session": int(found.get("session", 0))}


def period_actors(
    engine: Engine,
    scope: Scope,
    windows: list[tuple[datetime, datetime]],
    *,
    spec: FilterSpec | None = None,
    force: str | None = None,
) -> list[dict[str, int]]:
    """`distinct_actors` of each of `windows` (apart, as the Overview's periods are), in one
    statement (`Store.pairs_periods`): each ragged edge's spans read once for every window,
    each row tagged with its window. `spec`'s filter must be one the actor rollups know."""
    store = store_for(engine)
    if not store.pairs_periods or (spec is not None and not spec.only_uses(_ROLLUP_FILTERS)):
        raise ValueError("period_actors: a store that pairs periods, a time and project filter.")
    ordered = sorted(windows)
    if any(b > a for (_, b), (a, _) in zip(ordered, ordered[1:], strict=False)):
        raise ValueError("period_actors: the windows must not overlap (each span has one).")
    projects = spec.project_ids if spec is not None else ()
    grains = [] if force == "raw" else list(store.actor_grains)
    edges, pieces = [], []
    for i, (start, end) in enumerate(windows):
        for grain, a, b in plan_segments(start, end, grains):
            if grain is None:
                edges.append((i, a, b))
            else:
                window = literal(i, Integer()).label("window")
                pieces.append(_rollup_piece(scope, grain, a, b, projects, window))
    if edges:
        pieces.append(_tagged_edges(scope, edges, projects))
    u = union_all(*pieces).subquery("u")
    # each (window, kind)'s distinct actors counted in its group (the engine's `uniqExact`),
    # not a DISTINCT of every trio then a count: 13 % less CPU at 1M (docs/span-store-internals.md)
    query = select(u.c.window, u.c.kind, func.count(u.c.actor.distinct())).group_by(
        u.c.window, u.c.kind
    )
    with engine.connect() as conn:
        found = {(int(w), kind): int(n) for w, kind, n in conn.execute(query).all()}
    return [
        {"user": found.get((i, "user"), 0), "session": found.get((i, "session"), 0)}
        for i in range(len(windows))
    ]


def _tagged_edges(scope: Scope, edges: list[tuple[int, datetime, datetime]], projects):
    """(window, kind, actor) of the spans in the ragged `edges` ((window, start, end)), read
    once: each span's window is the one whose edge holds its start."""
    c = spans.c
    within = [(i, and_(c.start_time >= a, c.start_time < b)) for i, a, b in edges]
    where = _edge_where(scope, [w for _, w in within], projects)
    window = case(*((w, i) for i, w in within), else_=-1).label("window")
    pair = actor_pairs(c.user_id, c.session_id).label("pair")
    tagged = select(window, pair).where(*where).subquery("edges")
    return _from_pairs(tagged, tagged.c.window)


def _filtered(
    engine: Engine, scope: Scope, spec: FilterSpec, now: datetime | None
) -> dict[str, int]:
    c = spans.c
    query = select(func.count(c.user_id.distinct()), func.count(c.session_id.distinct())).where(
        *span_conditions(scope),
        *filter_conditions(spec, now or datetime.now(UTC), store_for(engine).name),
        counted(c),
    )
    with engine.connect() as conn:
        users, sessions = conn.execute(query).one()
    return {"user": int(users), "session": int(sessions)}
