"""A stored `other` wrapper that stops counting as an LLM call (its LLM call arrived in a later
batch: `ingest/llm_calls.py`, `settle_stored` on the other stores): its figures moved in the
rollups from the rows keyed `llm_call = true` to those keyed false, exactly as if it had never
counted as one, then its flag cleared in `spans` (docs/scale.md, "Ingest").

`llm_call` is a rollup key, and it is the only way the flag enters the figures: no rollup
column, trace total or hour's actor depends on it. So, for the wrappers still flagged, from
their minute partials as the minute's view made them (its own expressions over their spans):

1. Into the rows keyed false: the partials, inserted into `rollup_1min` (the hour's and day's
   views fold them as any minute row).
2. Out of the rows keyed true, at each grain: a bucket where the key then holds no span (its
   rows count exactly the wrappers' spans, and no other span or finer row is under it) is
   deleted, unless they hold an earlier move's negative row not merged yet (`_negative_rows`);
   elsewhere, and there, the partials' opposite is added, at the finest grain the key keeps
   spans at (into that grain's table: the coarser fold it by the cascade): counts and bins as
   their UInt64 complement (adding it wraps round to the difference, as every merge and read
   adds), sums negated, minimums and maximums NULL (which `min` and `max` pass over). No
   negative row ever lies among rows that are deleted: a read while a delete runs, which
   sees some of the key's rows gone and some not, saw a negative row alone otherwise (2^64 - 1
   spans). Nothing is rebuilt from the spans: rows whose spans the TTL deleted, other keys
   and other projects of the same buckets are left as they are.
3. Where the wrappers held a kept key's minimum or maximum, the extreme is computed again from
   what is left, finest grain first, and set on every row of the key (`ALTER TABLE ... UPDATE
   ... IN PARTITION`: `min` of equal values is that value, whichever rows the parts hold): the
   minute's from its spans (the wrappers left out), the hour's from its minute rows, the day's
   from its hour rows (the finer buckets this move changed taken as computed), each only when
   that source counts exactly the row's spans (else left, and logged).
4. The deletes and updates are queued (waited on one by one, each took about a second on
   chDB, most of it the engine's queue), then `ALTER TABLE spans UPDATE llm_call = false` for
   the wrappers alone (org, project, start, trace and span, in their month's partition;
   a mutation fires no view, so the spans are not counted again), queued too, then all
   waited on together, bounded, a timeout logged (the next move of the org waits for any
   left, the flags' too, before it reads the wrappers still flagged, and refuses the batch
   after its bound: the resend guards judge by the flags). Each wait is for the org's own rows
   (`wrapper_move_waits.py`): another org's failing mutation holds back no move.

Runs under the org's write turn, inside the batch's write, before its insert. A failure
part-way is logged and raised (the batch is answered 503, its calls not stored), and the
wrappers, still flagged, are found again by the resend, which finishes the move without
adding anything twice: the minute insert (with the minute's negatives) is skipped when the
minute's row keyed false already counts the wrappers' spans more than the spans stored under
that key (`_landed`); each grain's negatives are then judged alone (`_negatives_at`: the
minute's true row against its counted spans but the wrappers, an hour's or day's against its
finer rows), a wrapper whose negative an earlier attempt put at a grain now kept finer added
back there; the deletes and extremes are judged on what is there now.
Not on a cluster yet (`settle` returns there).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.ddl import _counted_spans
from observatory_core.storage.clickhouse.layout import micro_text
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
    _utc,
)
from observatory_core.storage.clickhouse.wrapper_move_waits import wait

log = logging.getLogger("observatory.span_store")

_WRAP = 2**64
_QUEUED = {"mutations_sync": 0, "lightweight_deletes_sync": 0}
_ROLLUPS = tuple(f"rollup_{grain}" for grain in layout.GRAIN_SECONDS)
WAIT_S = 15.0  # the org's earlier move's rollup mutations, before the next move (bounded)
FLAGS_WAIT_S = 15.0  # the flags' mutation, and this move's rollup mutations, after it
# The move's mutations as `system.mutations` shows them (`wrapper_move_waits.own`): each
# rollup one names one bucket (the retention's lightweight deletes name a cutoff:
# `bucket_start <`), the flags' one its new value
BUCKET = "bucket_start = "
FLAGS = "llm_call = false"


def _wrappers_where(wrappers: list[Wrapper], params: dict[str, Any], prefix: str = "") -> str:
    """The wrappers' rows: the key's prefix (org, project, start) and their identity."""
    params["ids"] = [(w.project_id, w.trace_id, w.span_id) for w in wrappers]
    params["lo"] = micro_text(min(w.start_time for w in wrappers))
    params["hi"] = micro_text(max(w.start_time for w in wrappers))
    p = prefix
    return (
        f"{p}org_id = %(org)s AND {p}project_id IN %(projects)s "
        f"AND {p}start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
        f"AND {p}start_time <= toDateTime64(%(hi)s, 6, 'UTC') "
        f"AND ({p}project_id, {p}trace_id, {p}span_id) IN %(ids)s"
    )


def _clear_flags(store: SpanStore, org_id: int, wrappers: list[Wrapper]) -> None:
    """The wrappers' flag cleared, one mutation per month (`IN PARTITION`: the engine then
    goes through that month's parts only), queued: `settle` waits for the org's rows."""
    by_month: dict[str, list[Wrapper]] = {}
    for w in wrappers:
        by_month.setdefault(f"{_utc(w.start_time):%Y%m}", []).append(w)
    for month, mine in sorted(by_month.items()):
        params: dict[str, Any] = {"org": org_id}
        params["projects"] = sorted({w.project_id for w in mine})
        where = _wrappers_where(mine, params)
        store.client.command(
            f"ALTER TABLE {store.table('spans')} UPDATE llm_call = false IN PARTITION {month} "
            f"WHERE {where} AND llm_call",
            parameters=params,
            settings={**_QUEUED, "max_query_size": 262_144 + 100 * len(mine)},
        )


def _moved_rows(store: SpanStore, org_id: int, wrappers: list[Wrapper]) -> list[dict[str, Any]]:
    """The minute partials of those of `wrappers` still counted as LLM calls, as the minute's
    view made them (keyed `llm_call = true`)."""
    params: dict[str, Any] = {"org": org_id}
    params["projects"] = sorted({w.project_id for w in wrappers})
    where = _wrappers_where(wrappers, params, "spans.")
    seconds = layout.GRAIN_SECONDS["1min"]
    bucket = f"toStartOfInterval(spans.start_time, INTERVAL {seconds} SECOND, 'UTC')"
    keys = layout.rollup_keys()
    select = [
        "spans.org_id AS org_id",
        f"toDateTime({bucket}, 'UTC') AS bucket_start",
        *(f"{expr} AS {c.name}" for c, expr in keys),
        *(f"{p.select} AS {p.column.name}" for p in _partials()),
    ]
    result = store.client.query(
        f"SELECT {', '.join(select)} FROM {store.table('spans')} AS spans "
        f"WHERE {where} AND spans.llm_call AND {_counted_spans()} "
        f"GROUP BY org_id, bucket_start, {', '.join(c.name for c, _ in keys)}",
        parameters=params,
        settings={"max_query_size": 262_144 + 100 * len(wrappers)},
    )
    return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


def _opposite(row: dict[str, Any]) -> dict[str, Any]:
    """The row that, added to `row`'s key (keyed `llm_call = true`), takes its spans out."""
    out = dict(row)
    for p in _partials():
        name, kind = p.column.name, _kind(p.column)
        value = row[name]
        if kind == "sumMap":
            out[name] = {k: (_WRAP - int(v)) % _WRAP for k, v in (value or {}).items()}
        elif kind in ("min", "max"):
            out[name] = None
        elif p.column.type == layout.SUM_COUNT:
            out[name] = (_WRAP - int(value)) % _WRAP
        else:
            out[name] = -value
    return out


def _insert(store: SpanStore, rows: list[dict[str, Any]], table: str = "rollup_1min") -> None:
    names = list(rows[0])
    store.client.insert(
        store.table(table),
        [[r[n] for n in names] for r in rows],
        column_names=names,
    )


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
    wrappers held, computed again from the finer grain (see the module's docstring)."""
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
            "Span store: org %s's %s row at %s of a wrapper that stopped counting as an LLM "
            "call holds %d spans where its source holds %d: its %s left as they were.",
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


def _landed(store: SpanStore, org_id: int, row: dict[str, Any]) -> bool:
    """Whether an earlier attempt's insert already added `row` (a wrapper's minute partials,
    keyed `llm_call = true`) to its key keyed false: that row then counts exactly its spans
    more than the spans stored under that key (the wrappers, still flagged, are not yet)."""
    key = dict((n, row[n]) for n in _key_names())
    key["llm_call"] = False
    bucket = _utc(row["bucket_start"])
    count, _ = _row_state(store, "rollup_1min", org_id, bucket, key)
    return count - _source_state(store, "1min", org_id, bucket, key, []).count == int(
        row["span_count"]
    )


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
) -> dict[tuple[str, datetime, tuple], bool]:
    """(grain, bucket, key) -> whether the move leaves the key keyed true there without a
    span: its rows count exactly the wrappers' spans, or none (an earlier attempt deleted
    them), and nothing else is under it: no other counted span in the minute; no other finer
    row in the hour or day, and every finer bucket of the wrappers emptied too."""
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
            out[(grain, bucket, key)] = emptied and not negative
        finer_grain = grain
    return out


def _negatives_at(
    store: SpanStore,
    org_id: int,
    grain: str,
    rows: list[dict[str, Any]],
    keys: list[tuple],
    finest: list[str | None],
    emptied: dict[tuple[str, datetime, tuple], bool],
    wrappers: list[Wrapper],
    done: set[int],
) -> None:
    """The negative rows whose finest kept grain is `grain` (but those of `done`, whose
    minute negatives went with the insert), inserted into its table (the coarser views fold
    them), each bucket's judged alone, so a resend adds nothing twice:
    its row counts more than what is under it (the minute's: its counted spans but the
    wrappers; the hour's and day's: their finer rows, the buckets the move empties left out)
    by exactly their spans when not yet added, by none when added. An earlier attempt that
    put the negative of a wrapper at this grain, which is now kept at a finer one (a span of
    its minute came between), left it short by that wrapper's spans: that wrapper's row
    (its counts and sums, no extreme) is added back. A bucket that differs otherwise is left
    (logged)."""
    order = list(_SECONDS)
    seconds = _SECONDS[grain]
    finer_grain = order[order.index(grain) - 1] if grain != "1min" else None
    names = _key_names()
    by_bucket: dict[tuple[datetime, tuple], list[int]] = {}
    for i, row in enumerate(rows):  # this grain's own, and those kept finer (hour and day)
        if i in done:
            continue
        if finest[i] == grain or (
            finer_grain and finest[i] and order.index(finest[i]) < order.index(grain)
        ):
            by_bucket.setdefault((_bucket(row["bucket_start"], seconds), keys[i]), []).append(i)
    out: list[dict[str, Any]] = []
    for (bucket, key), members in by_bucket.items():
        of = dict(zip(names, key, strict=True))
        width = timedelta(seconds=seconds)
        zero = {
            b: State(0, _no_extremes())
            for (g, b, k), empty in emptied.items()
            if empty and g == finer_grain and k == key and bucket <= b < bucket + width
        }
        count = _row_state(store, f"rollup_{grain}", org_id, bucket, of)[0]
        if grain == "1min":  # the wrappers, still flagged, left out of the spans
            below = _source_state(store, grain, org_id, bucket, of, wrappers).count
        else:
            below = _source_state(store, grain, org_id, bucket, of, [], zero).count
        own = [i for i in members if finest[i] == grain]
        kept = [i for i in members if finest[i] != grain]
        n = sum(int(rows[i]["span_count"]) for i in own)
        back = sum(int(rows[i]["span_count"]) for i in kept)
        excess = count - below
        negatives = [dict(_opposite(rows[i]), bucket_start=bucket) for i in own]
        back_in = [dict(rows[i], bucket_start=bucket, **_no_extremes()) for i in kept]
        if excess == 0:
            pass  # added already
        elif excess == n:
            out += negatives
        elif excess == -back:
            out += back_in
        elif excess == n - back:
            out += negatives + back_in
        else:
            log.warning(
                "Span store: org %s's %s row at %s holds %d spans where what is under it "
                "holds %d: the LLM calls of wrappers that stopped counting not taken out of "
                "it.",
                org_id,
                grain,
                bucket,
                count,
                below,
            )
    if out:
        _insert(store, out, f"rollup_{grain}")


def settle(store: SpanStore, org_id: int, wrappers: list[Wrapper]) -> int:
    """Stop `wrappers` (stored spans of `org_id` counted as LLM calls) counting as LLM calls,
    in the rollups at every grain and then in the spans (see above). Answers how many minute
    rows moved."""
    if not wrappers or store.naming.cluster:
        return 0
    # the org's earlier move's mutations, queued, applied by now to the org's rows (another
    # org's are not waited on): its extremes as it set them, and its flags cleared, before the
    # wrappers still flagged are read (`_landed` judges by the flags: a flag cleared after the
    # read would have the wrapper moved twice)
    if late := wait(store, org_id, [("spans", FLAGS)] + [(t, BUCKET) for t in _ROLLUPS], WAIT_S):
        raise DatabaseUnavailable(
            f"The span store's {', '.join(late)} rows of org {org_id} are still being "
            f"rewritten after {WAIT_S:.0f} s (system.mutations); retry."
        )
    rows = _moved_rows(store, org_id, wrappers)  # those still flagged
    if not rows:
        return 0
    try:
        names = _key_names()
        keys = [tuple(r[n] for n in names) for r in rows]
        groups: dict[str, dict[tuple, list[int]]] = {}  # grain -> (bucket, key) -> rows
        for grain, seconds in layout.GRAIN_SECONDS.items():
            for i, row in enumerate(rows):
                bucket = _bucket(row["bucket_start"], seconds)
                groups.setdefault(grain, {}).setdefault((bucket, keys[i]), []).append(i)
        emptied = _emptied(store, org_id, rows, keys, groups, wrappers)
        grains = list(layout.GRAIN_SECONDS)
        # each row's negative goes to the finest grain its key keeps spans at (a cascade
        # carries it to the coarser): never into a bucket the move empties, which is deleted
        finest: list[str | None] = []
        for i, row in enumerate(rows):
            kept = [
                g
                for g in grains
                if not emptied[(g, _bucket(row["bucket_start"], _SECONDS[g]), keys[i])]
            ]
            finest.append(kept[0] if kept else None)
        # an earlier attempt that failed after its insert left the flags: not inserted again
        todo = [i for i, r in enumerate(rows) if not _landed(store, org_id, r)]
        if todo:  # with the minute's negatives: one insert, landed or not together
            _insert(
                store,
                [dict(rows[i], llm_call=False) for i in todo]
                + [_opposite(rows[i]) for i in todo if finest[i] == "1min"],
            )
        for grain in grains:  # each grain's negatives their own check, finest first
            done = set(todo) if grain == "1min" else set()
            _negatives_at(store, org_id, grain, rows, keys, finest, emptied, wrappers, done)
        states: dict[tuple[str, datetime, tuple], State] = {}
        mutations = []
        finer_grain = None
        for grain, seconds in layout.GRAIN_SECONDS.items():  # finest first
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
                    emptied[(grain, bucket, key)],
                )  # fmt: skip
                states[(grain, bucket, key)] = state
                if mutation is not None:
                    mutations.append(mutation)
            finer_grain = grain
        # queued, not waited on (the next move waits for them first): each waited on took
        # about a second on chDB, most of it the engine's queue; `IN PARTITION` (the bucket's
        # month) keeps each to that month's parts. A read while one runs sees some rows of the
        # key with the new extremes and some with the old (the old extreme, as before the
        # move), or some of an emptied key's rows (the wrappers' own: no negative row there)
        for statement, params in mutations:
            store.client.command(statement, parameters=params, settings=_QUEUED)
        _clear_flags(store, org_id, wrappers)  # last: until then a resend finds them again
        # waited on, bounded, so the next batch's reads see the flags, and the batch is
        # answered with the figures whole (a read while an emptied key's delete runs counts
        # the wrapper twice among all spans: in the rows keyed true still, and false already).
        # Not done in time (another org's failing mutation of the same parts, or a long one
        # ahead in the queue): logged, not raised; the engine finishes them, and the org's
        # next move waits for them before it reads the wrappers still flagged
        waits = [("spans", FLAGS)] + ([(t, BUCKET) for t in _ROLLUPS] if mutations else [])
        late = wait(store, org_id, waits, FLAGS_WAIT_S)
        if late:
            log.warning(
                "Span store: org %s's rows of wrappers that stopped counting as LLM calls "
                "still being rewritten in %s after %.0f s (system.mutations).",
                org_id,
                ", ".join(late),
                FLAGS_WAIT_S,
            )
    except Exception:
        log.error(
            "Span store: moving org %s's wrappers %s out of the LLM calls failed part-way; "
            "they stay flagged, and the batch's resend finishes the move.",
            org_id,
            [(w.trace_id, w.span_id) for w in wrappers],
        )
        raise
    return len(rows)
