"""Twin calls on the span store (`ingest/dedup.py`'s rules; docs/span-store-internals.md, "Twin
calls"): each new LLM span of a batch paired with its twin, new or stored, before the batch is
inserted (the engine's views count each inserted span at once).

Which copy counts is `dedup.pick_keeper`'s answer, as on the other stores: the richer content,
then the stored copy, then the parent of a nested pair, then the first stored; the counted
copy takes from its twin what it lacks (`dedup.COPIED`, and the cost when it is unpriced). A
new copy set aside, or a new keeper taking its stored twin's fields, is the batch's row
changed before its insert. A stored copy that stops counting, or takes fields from its new
twin, is already in the figures: its restatement (the columns it is to take: `duplicate_of`,
or the fields taken; the spans that were its own duplicates pointed at the new keeper) is
answered to the caller, which journals it as a move of that span, run once the batch is
inserted (`storage/clickhouse/wrapper_moves.py`: its rollup rows, trace totals and hours'
actors restated). Without that (a caller passing no `restate`, or a cluster, where no move
runs yet) the stored copy keeps counting and the new one is set aside, taking nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from observatory_core.ingest import dedup
from observatory_core.semantic.fields import LLM_OPERATIONS
from observatory_core.storage.clickhouse import wrapper_moves, writes
from observatory_core.storage.clickhouse.cluster import SAME_REPLICA
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.layout import bound_time, micro_text
from observatory_core.storage.types import as_utc

# How far around a batch's spans their trace's stored spans are read: a call below a wrapper
# (or a nested twin) starts within seconds of it nearly always; a trace spread wider is settled
# on what this reads.
TREE_REACH = timedelta(days=1)
POOL_ROWS = 10_000  # stored twin candidates read per batch, at most


_POOL_COLUMNS = (
    "org_id",
    "project_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time",
    "end_time",
    "service_name",
    "scope_name",
    "input_tokens",
    "output_tokens",
    "model",
)


_MICRO = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SLICE = 2 * (dedup.TOLERANCE // _MICRO)  # microseconds: a start's tolerance spans two slices
_U64 = 2**64 - 1
# A span's tokens and slice of its start in one number (wrapping, as the engine's UInt64 does):
# a set of single numbers is cheap for the engine to parse and test, a set of 3,000 tuples
# took it 3 times the read. Two keys may share a number: the pool is a superset, checked by
# `dedup.twins` as before.
_NEAR_KEY = (
    f"toUInt64(intDiv(toUnixTimestamp64Micro(start_time), {_SLICE})) "
    "+ (toUInt64(input_tokens) * 1000003 + toUInt64(output_tokens)) * 68719476736"
)


def _near_keys(rows: list[dict]) -> list[int]:
    """`_NEAR_KEY` of every span that could be a separate twin of one of `rows`: its tokens,
    a start within the tolerance (two slices). Rows of the look-back only, so the starts are
    past 1970 and the slices agree with the engine's `intDiv`."""
    tolerance = dedup.TOLERANCE // _MICRO
    keys = set()
    for row in rows:
        start = (row["start_time"] - _EPOCH) // _MICRO
        tokens = (int(row["input_tokens"]) & _U64) * 1000003 + (int(row["output_tokens"]) & _U64)
        for piece in {(start - tolerance) // _SLICE, (start + tolerance) // _SLICE}:
            keys.add((piece + tokens * 68719476736) & _U64)
    return sorted(keys)


def _stored_candidates(store: SpanStore, recent: list[dict]) -> list[dict]:
    """Counted LLM spans stored in the recent rows' traces (within a day of them: the trace id's
    bloom filter) or starting within the tolerance of one (the key's time prefix), per org and
    project (twins share both), one row per span, at most `POOL_ROWS` for each of the two."""
    found: dict[tuple[str, str], dict] = {}
    by_scope: dict[tuple[int, int], list[dict]] = {}
    for row in recent:
        by_scope.setdefault((row["org_id"], row["project_id"]), []).append(row)
    for (org_id, project_id), rows in by_scope.items():
        windows = dedup.windows(rows)
        near = " OR ".join(
            f"(start_time >= {bound_time(f'lo{i}')} AND start_time <= {bound_time(f'hi{i}')})"
            for i in range(len(windows))
        )
        # a separate twin has a row's tokens and starts within the tolerance of it: the
        # windows alone let every span of a busy minute with common token counts through
        # (up to POOL_ROWS, read and paired in Python)
        keys = _near_keys(rows)
        # one text the engine casts: 3,000 numbers parsed as a statement's literals cost it more
        listed = ",".join(map(str, keys))
        near = f"({near}) AND has(CAST('[{listed}]' AS Array(UInt64)), {_NEAR_KEY})"
        # twins have the same token counts: only stored spans with a batch row's are read (the
        # near key holds the tokens already); one text the engine casts, as the keys, where
        # the batch's 1,100 pairs as tuple literals, bound and parsed twice, took 40% of the read
        tokens = sorted({(int(r["input_tokens"]), int(r["output_tokens"])) for r in rows})
        pairs = ",".join(f"({i},{o})" for i, o in tokens)
        params: dict[str, Any] = {"org": org_id, "project": project_id}
        for i, (_, lo, hi) in enumerate(windows):
            params[f"lo{i}"], params[f"hi{i}"] = micro_text(lo), micro_text(hi)
        traces = sorted({r["trace_id"] for r in rows})
        first = min(r["start_time"] for r in rows) - TREE_REACH
        last = max(r["start_time"] for r in rows) + TREE_REACH
        listed = writes.plain_list(traces)
        in_traces = (
            f"trace_id IN {listed or '%(traces)s'} AND start_time >= {bound_time('first')} "
            f"AND start_time <= {bound_time('last')} AND (input_tokens, output_tokens) IN "
            f"CAST('[{pairs}]' AS Array(Tuple(Int64, Int64)))"
        )
        params.update(first=micro_text(first), last=micro_text(last))
        if listed is None:
            params["traces"] = traces
        # each window's text (~143 bytes) counts as two ids: a long trace's calls over a second
        # apart are a window each, past the size the ids alone allow
        ids = len(traces) + len(tokens) + len(keys) + 2 * len(windows)
        for row in _pool_rows(store, (near, in_traces), params, ids):
            found.setdefault((row["trace_id"], row["span_id"]), row)
    return list(found.values())


def _pool_rows(
    store: SpanStore, wheres: tuple[str, ...], params: dict[str, Any], ids: int
) -> list[dict]:
    """One statement: each of `wheres` its own key-bounded read, at most `POOL_ROWS` rows."""
    reads = " UNION ALL ".join(
        f"SELECT {', '.join(_POOL_COLUMNS)} FROM {store.table('spans')} "
        "WHERE org_id = %(org)s AND project_id = %(project)s AND operation IN %(ops)s "
        f"AND scope_name IS NOT NULL AND duplicate_of IS NULL AND ({where}) "
        "LIMIT %(limit)s"
        for where in wheres
    )
    result = store.client.query(
        f"SELECT * FROM ({reads}) LIMIT 1 BY trace_id, span_id",
        parameters={**params, "ops": sorted(LLM_OPERATIONS), "limit": POOL_ROWS},
        settings=writes.ids_query_size(store, 2 * ids),
    )
    out = []
    for values in result.result_rows:
        row = dict(zip(_POOL_COLUMNS, values, strict=True))
        for name in ("start_time", "end_time"):
            row[name] = as_utc(row[name])
        row["instance"] = _UNREAD  # read only for a stored span that pairs (`_same_instance`)
        out.append(row)
    return out


_UNREAD = object()
_RICH = ", ".join(f"ifNull({n}, '') != '' AS {n}" for n in dedup.RICHNESS)
_DETAILS = (*dedup.RICHNESS, *dedup.COPIED, *dedup.COST)


def _instance_of(store: SpanStore, row: dict) -> Any:
    """The stored span's `service.instance.id`, read from its attributes once, with what
    `dedup.pick_keeper` and `_take` compare (whether it has each of `dedup.RICHNESS`, its
    `dedup.COPIED` and `dedup.COST`): read only for a stored span that pairs."""
    if row["instance"] is _UNREAD:
        result = store.client.query(
            "SELECT JSONExtractRaw(attributes, 'resource', 'service.instance.id'), "
            f"{_RICH}, {', '.join(dedup.COPIED + dedup.COST)} "
            f"FROM {store.table('spans')} WHERE org_id = %(org)s AND project_id = %(project)s "
            f"AND start_time = {bound_time('start')} "  # the sorting key's prefix: one granule
            "AND trace_id = %(trace)s AND span_id = %(span)s LIMIT 1",
            parameters={
                "org": row["org_id"],
                "project": row["project_id"],
                "start": micro_text(row["start_time"]),
                "trace": row["trace_id"],
                "span": row["span_id"],
            },
            settings=store.naming.settings(SAME_REPLICA),
        )
        gone = ("", *(False for _ in dedup.RICHNESS), *(None for _ in dedup.COPIED + dedup.COST))
        raw, *details = result.result_rows[0] if result.result_rows else gone
        row["gone"] = not result.result_rows
        row["instance"] = json.loads(raw) if raw else None
        row.update(zip(_DETAILS, details, strict=True))
    return row["instance"]


Restatement = tuple[dict, dict, dict[str, Any]]  # (stored span, its new twin, its columns)


def set_aside_twins(
    store: SpanStore,
    batch: list[dict],
    dedup_off: frozenset[int],
    now: datetime,
    restate: list[Restatement] | None = None,
) -> int:
    """Mark each new span that is one call's second copy `duplicate_of` its twin (rows of
    `batch`, changed in place); answers how many pairs. `restate`, given: where the rule keeps
    a stored copy that takes fields, or sets one aside, (stored span, the new twin, the
    columns it is to take) appended for the caller to journal; else a stored copy counts on."""
    fresh = [
        r
        for r in batch
        if r["org_id"] not in dedup_off
        and r["operation"] in LLM_OPERATIONS
        and r.get("scope_name")
        and r.get("duplicate_of") is None
    ]
    if not fresh:
        return 0
    for i, row in enumerate(batch):  # the batch's order stands for "stored first"
        row["id"] = i + 1
        row["instance"] = dedup.instance(row.get("attributes"))
    since = now - dedup.LOOKBACK
    recent = [r for r in fresh if r["start_time"] >= since]
    pool = {(r["org_id"], r["trace_id"], r["span_id"]): r for r in fresh}
    for i, row in enumerate(_stored_candidates(store, recent) if recent else ()):
        row["id"] = -(i + 1)  # stored: never the batch's
        pool.setdefault((row["org_id"], row["trace_id"], row["span_id"]), row)
    ids = {r["id"] for r in batch}
    nearby = dedup.Nearby(pool.values())
    settled: set[int] = set()
    marked = 0
    for row in sorted(fresh, key=lambda r: (r["start_time"], r["id"])):
        if row["id"] in settled:
            continue
        is_recent = row["start_time"] >= since
        best: tuple[timedelta, dict] | None = None
        for other in nearby.of(row):
            if other["id"] in settled or (other["id"] not in ids and not is_recent):
                continue
            kind = dedup.twins(row, other)
            if kind is None or not _same_instance(store, row, other):
                continue
            gap = abs(row["start_time"] - other["start_time"]) if kind == "separate" else dedup.ZERO
            if best is None or gap < best[0]:
                best = (gap, other)
        if best is None:
            continue
        other = best[1]
        if other["id"] in ids:
            keeper, duplicate = dedup.pick_keeper(row, other, ids)
            _take(keeper, duplicate)
        elif restate is None or store.naming.cluster:  # no restatement: it counts on
            keeper, duplicate = other, row
        else:  # what the rule compares of it read with its instance (`_same_instance`)
            keeper, duplicate = dedup.pick_keeper(row, other, ids)
            if keeper is other:  # the stored copy counts on, taking what it lacks
                if taken := dedup.taken(other, row):
                    restate.append((other, row, taken))
            else:  # the new copy counts, taking what it lacks; the stored one set aside
                _take(row, other)
                aside = {"duplicate_of": row["span_id"], "duplicate_trace_id": row["trace_id"]}
                restate.append((other, row, aside))
                restate += [(d, row, aside) for d in _duplicates_of(store, other)]
        settled |= {keeper["id"], duplicate["id"]}
        if duplicate["id"] in ids:
            duplicate["duplicate_of"] = keeper["span_id"]
            duplicate["duplicate_trace_id"] = keeper["trace_id"]
        marked += 1
    for row in batch:
        del row["id"], row["instance"]
    for stored, _, _ in restate or ():
        for name in ("id", "instance", "gone"):
            stored.pop(name, None)
    return marked


def _duplicates_of(store: SpanStore, span: dict) -> list[dict]:
    """The stored spans set aside as `span`'s twins (pointed at the new keeper as `span` is,
    as `dedup._mark` does), within `TREE_REACH` of it: one read, only where a stored copy
    stops counting."""
    result = store.client.query(
        f"SELECT org_id, project_id, trace_id, span_id, start_time FROM {store.table('spans')} "
        "WHERE org_id = %(org)s AND project_id = %(project)s "
        f"AND start_time >= {bound_time('lo')} AND start_time <= {bound_time('hi')} "
        "AND duplicate_trace_id = %(trace)s AND duplicate_of = %(span)s",
        parameters={
            "org": span["org_id"],
            "project": span["project_id"],
            "trace": span["trace_id"],
            "span": span["span_id"],
            "lo": micro_text(span["start_time"] - TREE_REACH),
            "hi": micro_text(span["start_time"] + TREE_REACH),
        },
        settings=store.naming.settings(SAME_REPLICA),
    )
    names = ("org_id", "project_id", "trace_id", "span_id", "start_time")
    rows = [dict(zip(names, r, strict=True)) for r in result.result_rows]
    for row in rows:
        row["start_time"] = as_utc(row["start_time"])
    return rows


def _same_instance(store: SpanStore, a: dict, b: dict) -> bool:
    """Where both resources name their instance (`service.instance.id`), it must be one. A
    stored `b` deleted since the candidates' read (the TTL, a fold of copies) is no twin: kept,
    it would have the new copy set aside for a span no figure counts."""
    other = _instance_of(store, b)
    if b.get("gone"):
        return False
    return a["instance"] is None or other is None or a["instance"] == other


def _take(keeper: dict, duplicate: dict) -> None:
    keeper.update(dedup.taken(keeper, duplicate))


def journal_twins(store: SpanStore, restated: list[Restatement]) -> list[wrapper_moves.Entry]:
    """Each org's stored twins restated journaled as one move whose
    commit point is the insert of their new twins (`wrapper_moves.py`)."""
    by_org: dict[int, list[Restatement]] = {}
    for item in restated:
        by_org.setdefault(item[0]["org_id"], []).append(item)
    entries = []
    for org_id, mine in by_org.items():
        spans, sets = {}, {}
        for stored, twin, columns in mine:
            span = wrapper_moves.Wrapper(
                stored["project_id"], stored["trace_id"], stored["span_id"], stored["start_time"]
            )
            call = wrapper_moves.Call(
                twin["project_id"], twin["trace_id"], twin["span_id"], twin["start_time"]
            )
            spans[span], sets[span] = (call,), columns
        entries.append(wrapper_moves.journal(store, org_id, spans, sets))
    return entries
