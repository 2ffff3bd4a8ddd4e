"""Exact distinct users and sessions over a time range, mostly from the actor rollups.

Whole days and hours come from `rollup_actors_*`; the ragged edges (under an hour) from spans.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, func, literal, select, union_all
from sqlalchemy.engine import Engine

from observatory_core.metrics.rollup_path import plan_segments
from observatory_core.scope import Scope, span_conditions
from observatory_core.storage.schema import ACTOR_ROLLUPS, spans


def _raw(scope: Scope, start: datetime, end: datetime):
    c = spans.c
    where = [*span_conditions(scope), c.start_time >= start, c.start_time < end]
    return [
        select(literal(kind, String()).label("kind"), column.label("actor")).where(
            *where, column.is_not(None)
        )
        for kind, column in (("user", c.user_id), ("session", c.session_id))
    ]


def distinct_actors(
    engine: Engine, scope: Scope, start: datetime, end: datetime, *, force: str | None = None
) -> dict[str, int]:
    """{"user": distinct user ids, "session": distinct session ids} seen in [start, end)."""
    grains = [] if force == "raw" else ["1day", "1hour"]
    pieces = []
    for grain, a, b in plan_segments(start, end, grains):
        if grain is None:
            pieces += _raw(scope, a, b)
            continue
        t = ACTOR_ROLLUPS[grain]
        pieces.append(
            select(t.c.kind, t.c.actor).where(
                *span_conditions(scope, t), t.c.bucket_start >= a, t.c.bucket_start < b
            )
        )
    if not pieces:
        return {"user": 0, "session": 0}
    # DISTINCT first, then count: PostgreSQL hashes the pairs instead of sorting per kind
    u = union_all(*pieces).subquery("u")
    pairs = select(u.c.kind, u.c.actor).distinct().subquery("pairs")
    query = select(pairs.c.kind, func.count()).group_by(pairs.c.kind)
    with engine.connect() as conn:
        found = dict(conn.execute(query).all())
    return {"user": int(found.get("user", 0)), "session": int(found.get("session", 0))}
