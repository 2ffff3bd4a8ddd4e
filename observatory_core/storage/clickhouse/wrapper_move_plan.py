"""What a move (`wrapper_moves.py`, docs/span-store-internals.md, "Wrapper moves and their
journal") does to the figures, judged on the rollups as they stand: the partials it inserts
(`inserts`: the rows as the spans are to stand, the negative rows at the finest grain each key
keeps spans at, the trace totals' deltas), the buckets it empties, and the deletes and extremes'
updates (`mutations`). Apart from the running of the move (journal, sends, waits) because the
plan is fixed and journaled before the move's first statement (`wrapper_move_journal.Plan`), so
a move taken in after a failure sends what the first attempt planned; `mutations` alone is
judged again, after the inserts, as statements that can be sent again. It reads, never writes.
A move that changes no column a figure reads (`rollup_select.columns_read`,
`move_traces.columns_read`: a twin taking only the error type and message) plans nothing, and
is its `spans` row's mutation alone.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from observatory_core.storage.clickhouse import layout, move_traces, rollup_select
from observatory_core.storage.clickhouse import wrapper_move_resends as resends
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.wrapper_move_journal import Entry, Plan
from observatory_core.storage.clickhouse.wrapper_move_reads import (
    State,
    Wrapper,
    _bucket,
    _extremes,
    _key_names,
    _key_where,
    _kind,
    _negative_rows,
    _no_extremes,
    _partials,
    _row_state,
    _second,
    _source_state,
)
from observatory_core.storage.clickhouse.wrapper_move_spans import (
    Sets,
    _moved_rows,
    _set_groups,
    _sources,
)

log = logging.getLogger("observatory.span_store")


def _opposite(row: dict[str, Any]) -> dict[str, Any]:
    """The row that, added to `row`'s key (keyed `llm_call = true`), takes its spans out."""
    out = dict(row)
    for p in _partials():
        name, kind = p.column.name, _kind(p.column)
        value = row[name]
        if kind == "sumMap":
            out[name] = {
                k: (layout.UINT64_WRAP - int(v)) % layout.UINT64_WRAP
                for k, v in (value or {}).items()
            }
        elif kind in ("min", "max"):
            out[name] = None
        elif p.column.type == layout.SUM_COUNT:
            out[name] = (layout.UINT64_WRAP - int(value)) % layout.UINT64_WRAP
        else:
            out[name] = -value
    return out


def _settle_key(
    store: SpanStore,
    grain: str,
    org_id: int,
    bucket: datetime,
    key: dict,
    moved: dict,
    wrappers: list[Wrapper],
    finer: dict[datetime, State],
    emptied: bool = False,
) -> tuple[State, tuple[str, dict[str, Any]] | None]:
    """The key keyed true at `bucket` after the move, and the mutation that makes its rows so
    (None: none needed): a DELETE when it counts nothing, else an UPDATE of each extreme the
    wrappers held, computed again from the finer grain (`wrapper_moves.py`'s docstring, step
    3)."""
    table = f"rollup_{grain}"
    params: dict[str, Any] = {"org": org_id, "bucket": _second(bucket)}
    where = "org_id = %(org)s AND bucket_start = toDateTime(%(bucket)s, 'UTC') AND " + _key_where(
        key, params
    )
    partition = f"IN PARTITION {bucket:%Y%m}"
    if emptied:  # its rows are the wrappers' alone, no negative row among them
        empty = State(0, {name: None for name, _ in _extremes()})
        return empty, (f"DELETE FROM {store.table(table)} {partition} WHERE {where}", params)
    count, have = _row_state(store, table, org_id, bucket, key)
    if count == 0:  # its rows add up to nothing: no extreme either
        empty = State(0, {name: None for name, _ in _extremes()})
        stale = [name for name, _ in _extremes() if have[name] is not None]
        if not stale:
            return empty, None
        sets = ", ".join(f"{name} = NULL" for name in stale)
        return empty, (
            f"ALTER TABLE {store.table(table)} UPDATE {sets} {partition} WHERE {where}",
            params,
        )
    held = [
        (name, kind)
        for name, kind in _extremes()
        if moved[name] is not None and have[name] is not None and have[name] == moved[name]
    ]
    if not held:
        return State(count, have), None
    source = _source_state(store, grain, org_id, bucket, key, wrappers, finer)
    if source.count != count:
        log.warning(
            "Span store: org %s's %s row at %s of a moved span (a wrapper out of the LLM "
            "calls, or a twin restated) holds %d spans where its source holds %d: its %s left "
            "as they were.",
            org_id,
            grain,
            bucket,
            count,
            source.count,
            ", ".join(n for n, _ in held),
        )
        return State(count, have), None
    sets = []
    for i, (name, _) in enumerate(held):
        params[f"v{i}"] = source.extremes[name]
        sets.append(f"{name} = CAST(%(v{i})s, 'Nullable(Float64)')")
    now = dict(have, **{name: source.extremes[name] for name, _ in held})
    statement = (
        f"ALTER TABLE {store.table(table)} UPDATE {', '.join(sets)} {partition} WHERE {where}"
    )
    return State(count, now), (statement, params)


def _merge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The extremes of several partial rows of one key."""
    out: dict[str, Any] = {}
    for name, kind in _extremes():
        values = [r[name] for r in rows if r[name] is not None]
        out[name] = (min if kind == "min" else max)(values) if values else None
    return out


_SECONDS = layout.GRAIN_SECONDS


def _emptied(
    store: SpanStore,
    org_id: int,
    rows: list[dict[str, Any]],
    keys: list[tuple],
    groups: dict[str, dict[tuple, list[int]]],
    wrappers: list[Wrapper],
    added: set[tuple[str, datetime, tuple]],
) -> dict[tuple[str, datetime, tuple], bool]:
    """(grain, bucket, key) -> whether the move leaves the key keyed true there without a
    span: its rows count exactly the wrappers' spans, or none (an earlier attempt deleted
    them), and nothing else is under it: no other counted span in the minute; no other finer
    row in the hour or day, and every finer bucket of the wrappers emptied too; and the move
    adds nothing there (`added`: a twin restated under the key it had)."""
    names = _key_names()
    out: dict[tuple[str, datetime, tuple], bool] = {}
    finer_grain = None
    for grain, seconds in _SECONDS.items():
        for (bucket, key), members in groups[grain].items():
            of = dict(zip(names, key, strict=True))
            n = sum(int(rows[i]["span_count"]) for i in members)
            count = _row_state(store, f"rollup_{grain}", org_id, bucket, of)[0]
            negative = _negative_rows(store, f"rollup_{grain}", org_id, bucket, of)
            if grain == "1min":
                others = _source_state(store, grain, org_id, bucket, of, wrappers).count
                finer_empty = True
            else:
                width = timedelta(seconds=seconds)
                mine = {
                    b: empty
                    for (g, b, k), empty in out.items()
                    if g == finer_grain and k == key and bucket <= b < bucket + width
                }
                finer_empty = all(mine.values())
                zero = {b: State(0, _no_extremes()) for b in mine}
                others = _source_state(store, grain, org_id, bucket, of, [], zero).count
            emptied = finer_empty and others == 0 and count in (n, 0)
            out[(grain, bucket, key)] = (
                emptied and not negative and (grain, bucket, key) not in added
            )
        finer_grain = grain
    return out


def inserts(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """Each target's insert: into the minute's table the partials as the spans are to stand
    (a wrapper's keyed false) and the negative rows kept at the minute; into the hour's and
    day's, the negative rows whose finest kept grain they are (the coarser grains fold each by
    the cascade); into the trace totals, each changed trace's row (`move_traces.py`)."""
    out: dict[str, list[dict[str, Any]]] = {g: [] for g in _SECONDS}
    added = plan.added if plan.added is not None else [dict(r, llm_call=False) for r in plan.rows]
    out["1min"] = list(added)
    for row, grain in zip(plan.rows, plan.finest, strict=True):
        if grain is not None:
            bucket = _bucket(row["bucket_start"], _SECONDS[grain])
            out[grain].append(dict(_opposite(row), bucket_start=bucket))
    out[resends.TRACES] = [t["delta"] for t in plan.traces if t["delta"] is not None]
    return out


def _taken(groups: list[tuple[Sets, list[Wrapper]]]) -> set[str]:
    """The span columns the move changes."""
    return {name for sets, _ in groups for name in sets}


def plan(store: SpanStore, org_id: int, entry: Entry) -> Plan | None:
    """The move of those of the entry's spans still to change, judged on the rollups as they
    stand before its first statement (None: none is)."""
    wrappers = list(entry.wrappers)
    groups = _set_groups(entry)
    sources, params, settings = _sources(store, org_id, wrappers, groups)
    # a figure changes only when a column it reads does: a twin taking only the error type and
    # message (the error counts are by status) changes no rollup row, trace total or actor,
    # and its move is its `spans` row's mutation alone; a wrapper's flag is a rollup key only
    taken = _taken(groups)
    rows: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    if taken & rollup_select.columns_read():
        rows, added = _moved_rows(store, sources, params, settings)
    traces: list[dict[str, Any]] = []
    actors: dict[str, list[dict[str, Any]]] = {}
    if taken & move_traces.columns_read():
        traces = move_traces.plan_traces(store, org_id, wrappers, sources, params, settings)
        actors = move_traces.plan_actors(store, sources, params, settings)
    if not rows and not added:
        ((left,),) = store.client.query(
            f"SELECT count() FROM {sources[0]}", parameters=params, settings=settings
        ).result_rows
        if not left and not traces:
            return None
    keys, groups_by_grain = _groups(rows)
    in_keys = {
        (g, _bucket(r["bucket_start"], sec), k)
        for r, k in zip(added, _keys(added), strict=True)
        for g, sec in _SECONDS.items()
    }
    emptied = _emptied(store, org_id, rows, keys, groups_by_grain, wrappers, in_keys)
    # each row's negative goes to the finest grain its key keeps spans at (a cascade carries
    # it to the coarser): never into a bucket the move empties, which is deleted
    finest: list[str | None] = []
    for i, row in enumerate(rows):
        kept = [
            g
            for g in _SECONDS
            if not emptied[(g, _bucket(row["bucket_start"], _SECONDS[g]), keys[i])]
        ]
        finest.append(kept[0] if kept else None)
    return Plan(rows, finest, emptied, added, traces, actors)


def _keys(rows: list[dict[str, Any]]) -> list[tuple]:
    """Each row's rollup key."""
    names = _key_names()
    return [tuple(r[n] for n in names) for r in rows]


def _groups(rows: list[dict[str, Any]]) -> tuple[list[tuple], dict[str, dict[tuple, list[int]]]]:
    """Each row's key, and grain -> (bucket, key) -> the rows under it."""
    keys = _keys(rows)
    groups: dict[str, dict[tuple, list[int]]] = {}
    for grain, seconds in _SECONDS.items():
        groups[grain] = {}
        for i, row in enumerate(rows):
            bucket = _bucket(row["bucket_start"], seconds)
            groups[grain].setdefault((bucket, keys[i]), []).append(i)
    return keys, groups


def mutations(
    store: SpanStore, org_id: int, plan: Plan, wrappers: list[Wrapper]
) -> list[tuple[str, dict[str, Any]]]:
    """The deletes and extremes' updates, judged on the rollups as they are now (after the
    plan's inserts), finest grain first: statements that can be sent again."""
    names = _key_names()
    rows = plan.rows
    _, groups = _groups(rows)
    # the minute's spans as they are to stand, under the key they had: part of its source
    added = plan.added or []
    _, added_groups = _groups(added)
    states: dict[tuple[str, datetime, tuple], State] = {
        ("", bucket, key): State(
            sum(int(added[i]["span_count"]) for i in members),
            _merge([added[i] for i in members]),
        )
        for (bucket, key), members in added_groups["1min"].items()
    }
    mutations = []
    finer_grain = ""
    for grain, seconds in _SECONDS.items():  # finest first
        for (bucket, key), members in groups[grain].items():
            finer = {
                b: state
                for (g, b, k), state in states.items()
                if g == finer_grain
                and k == key
                and bucket <= b < bucket + timedelta(seconds=seconds)
            }
            state, mutation = _settle_key(
                store, grain, org_id, bucket, dict(zip(names, key, strict=True)),
                _merge([rows[i] for i in members]), wrappers, finer,
                plan.emptied[(grain, bucket, key)],
            )  # fmt: skip
            states[(grain, bucket, key)] = state
            if mutation is not None:
                mutations.append(mutation)
        finer_grain = grain
    return mutations
