"""Keeping rollups current: fold each batch of new spans in, or rebuild from all spans.

The bulk write (`storage/bulk.py`) puts the spans it actually inserted (re-sent duplicates
excluded) into a temporary table inside its transaction; the ingest write path
(`ingest/persist.py`) hands that table to `fold_new_spans`, which adds them to every grain, so
the rollups commit or roll back together with the spans.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    MetaData,
    Table,
    delete,
    exists,
    func,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, Engine

from observatory_core.rollups.partials import (
    actor_select,
    partial_select,
    trace_select,
)
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.dialect import greatest_of, least_of, time_bucket, upsert
from observatory_core.storage.packed_sketch import sketch_add, sketch_compact, sketch_merge
from observatory_core.storage.schema import (
    ACTOR_GRAINS,
    ACTOR_KINDS,
    ACTOR_ROLLUPS,
    ROLLUP_COUNTS,
    ROLLUP_DIMENSIONS,
    ROLLUP_GRAINS,
    ROLLUP_MEASURES,
    ROLLUPS,
    spans,
    trace_totals,
)
from observatory_core.storage.stores import store_for


def _add_into(conn: Connection, grain: str, source_select) -> None:
    table = ROLLUPS[grain]
    names = [c.name for c in source_select.selected_columns]
    stmt = upsert(conn, table).from_select(names, source_select)
    new = stmt.excluded
    t = table.c
    updates = {c: t[c] + new[c] for c in ROLLUP_COUNTS}
    updates["latency_sketch"] = sketch_add(t.latency_sketch, new.latency_sketch)
    for m in ROLLUP_MEASURES:
        updates[f"{m}_count"] = t[f"{m}_count"] + new[f"{m}_count"]
        for part in ("sum", "sumsq"):
            updates[f"{m}_{part}"] = func.coalesce(t[f"{m}_{part}"], 0) + func.coalesce(
                new[f"{m}_{part}"], 0
            )
        updates[f"{m}_min"] = least_of(t[f"{m}_min"], new[f"{m}_min"])
        updates[f"{m}_max"] = greatest_of(t[f"{m}_max"], new[f"{m}_max"])
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.org_id, t.bucket_start, *(t[d] for d in ROLLUP_DIMENSIONS)],
            set_=updates,
        )
    )


def _add_actors(conn: Connection, grain: str, source_select) -> None:
    table = ACTOR_ROLLUPS[grain]
    stmt = upsert(conn, table).from_select(
        [c.name for c in source_select.selected_columns], source_select
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[
                table.c.org_id,
                table.c.bucket_start,
                table.c.project_id,
                table.c.kind,
                table.c.actor,
            ],
            set_={"span_count": table.c.span_count + stmt.excluded.span_count},
        )
    )


def _add_traces(conn: Connection, source_select) -> None:
    t = trace_totals
    stmt = upsert(conn, t).from_select(
        [c.name for c in source_select.selected_columns], source_select
    )
    new = stmt.excluded
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.org_id, t.c.trace_id, t.c.project_id],
            set_={
                "root_id": func.coalesce(t.c.root_id, new.root_id),
                "span_count": t.c.span_count + new.span_count,
                "error_count": t.c.error_count + new.error_count,
                "total_cost_usd": t.c.total_cost_usd + new.total_cost_usd,
                "total_tokens": t.c.total_tokens + new.total_tokens,
                "max_span_id": greatest_of(t.c.max_span_id, new.max_span_id),
                "first_start": least_of(t.c.first_start, new.first_start),
                "last_start": greatest_of(t.c.last_start, new.last_start),
                "last_end": greatest_of(t.c.last_end, new.last_end),
            },
        )
    )


def _mark_shared(conn: Connection, org_id: int | None = None, new=None) -> None:
    """Flag the rows of traces that have spans in more than one project (of `new`'s traces,
    or of every trace): the explorer sums all rows of such a trace, not just the matching one."""
    t, other = trace_totals, trace_totals.alias("other")
    where = [
        t.c.shared.is_(False),
        exists().where(
            other.c.org_id == t.c.org_id,
            other.c.trace_id == t.c.trace_id,
            other.c.project_id != t.c.project_id,
        ),
    ]
    if org_id is not None:
        where.append(t.c.org_id == org_id)
    if new is not None:
        where.append(tuple_(t.c.org_id, t.c.trace_id).in_(select(new.c.org_id, new.c.trace_id)))
    conn.execute(update(t).where(*where).values(shared=True))


def _delta_table() -> Table:
    """A temporary table shaped like a rollup: the new spans' 1-minute partials, from which the
    coarser grains are merged (cheaper than reading the spans again per grain)."""
    return Table(
        "rollup_delta",
        MetaData(),
        *(Column(c.name, c.type) for c in ROLLUPS["1min"].columns),
        prefixes=["TEMPORARY"],
    )


rollup_delta = _delta_table()


def merge_select(src, bucket_seconds: int):
    """Partials of a finer grain merged into `bucket_seconds` buckets (sums add, min of mins...)."""
    c = src.c
    keys = [
        c.org_id,
        time_bucket(c.bucket_start, bucket_seconds).label("bucket_start"),
        *(c[d] for d in ROLLUP_DIMENSIONS),
    ]
    parts = []
    for col in ROLLUPS["1min"].columns:
        if col.name in ("org_id", "bucket_start", *ROLLUP_DIMENSIONS):
            continue
        if col.name == "latency_sketch":
            parts.append(sketch_compact(sketch_merge(c[col.name])).label(col.name))
        elif col.name.endswith("_min"):
            parts.append(func.min(c[col.name]).label(col.name))
        elif col.name.endswith("_max"):
            parts.append(func.max(c[col.name]).label(col.name))
        else:
            parts.append(func.sum(c[col.name]).label(col.name))
    return select(*keys, *parts).group_by(*keys)


def fold_new_spans(conn: Connection, new: Table) -> None:
    """Add the spans in the temporary table `new` (at least `SOURCE_COLUMNS`) to every rollup
    grain, the actor rollups and `trace_totals` (same transaction as the spans)."""
    store_for(conn).prepare_temp_table(conn, rollup_delta, ROLLUPS["1min"].name)
    minutes = partial_select(new, ROLLUP_GRAINS["1min"])
    conn.execute(
        rollup_delta.insert().from_select([c.name for c in minutes.selected_columns], minutes)
    )
    # WHERE: SQLite would otherwise read ON CONFLICT as a join constraint
    _add_into(conn, "1min", select(rollup_delta).where(literal_column("1 = 1")))
    for grain in ("1hour", "1day"):
        _add_into(conn, grain, merge_select(rollup_delta, ROLLUP_GRAINS[grain]))
    for grain in ACTOR_GRAINS:
        for kind in ACTOR_KINDS:
            _add_actors(conn, grain, actor_select(new, ROLLUP_GRAINS[grain], kind))
    _add_traces(conn, trace_select(new))
    _mark_shared(conn, new=new)


def rebuild_on(conn: Connection, org_id: int | None = None) -> dict[str, int]:
    """Recompute every rollup grain from the spans (all orgs, or one) on this connection."""
    counts = {}
    for grain, seconds in ROLLUP_GRAINS.items():
        table = ROLLUPS[grain]
        mine = [] if org_id is None else [table.c.org_id == org_id]
        conn.execute(delete(table).where(*mine))
        where = [counted(spans.c)] + ([] if org_id is None else [spans.c.org_id == org_id])
        source = partial_select(spans, seconds, where=where)
        conn.execute(table.insert().from_select([c.name for c in source.selected_columns], source))
        counts[grain] = conn.execute(
            select(func.count()).select_from(table).where(*mine)
        ).scalar_one()
    for grain in ACTOR_GRAINS:
        table = ACTOR_ROLLUPS[grain]
        mine = [] if org_id is None else [table.c.org_id == org_id]
        conn.execute(delete(table).where(*mine))
        for kind in ACTOR_KINDS:
            source = actor_select(spans, ROLLUP_GRAINS[grain], kind).where(counted(spans.c))
            if org_id is not None:
                source = source.where(spans.c.org_id == org_id)
            conn.execute(
                table.insert().from_select([c.name for c in source.selected_columns], source)
            )
    mine = [] if org_id is None else [trace_totals.c.org_id == org_id]
    conn.execute(delete(trace_totals).where(*mine))
    source = trace_select(spans).where(counted(spans.c))
    if org_id is not None:
        source = source.where(spans.c.org_id == org_id)
    conn.execute(
        trace_totals.insert().from_select([c.name for c in source.selected_columns], source)
    )
    _mark_shared(conn, org_id)
    return counts


def rebuild(engine: Engine, *, org_id: int | None = None) -> dict[str, int]:
    """`python -m observatory_core rollups rebuild`: one transaction, so readers never see a gap."""
    with engine.begin() as conn:
        counts = rebuild_on(conn, org_id)
        store_for(conn).analyze(conn, (*ROLLUPS.values(), *ACTOR_ROLLUPS.values(), trace_totals))
    return counts
