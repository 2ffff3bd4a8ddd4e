"""Ingest into the ClickHouse span store: what the write path does on the other stores, done
before the insert, because the engine's views fold each inserted span into the rollups and
trace totals at once and cannot take it back out (docs/span-store-internals.md, "Writes and the
write turn").

Per batch, under the store's write turn (this process's, and the batch's orgs' across
processes, `storage/clickhouse/org_turns.py`), after the spans already stored are dropped
(`storage/clickhouse/writes.py`) and before the rest is inserted (`prepare`):

1. twin calls set aside (`ingest/dedup.py`'s rules): a new LLM span paired with another new
   one as elsewhere (the richer counts and takes what only its twin has); paired with a stored
   span, the stored one keeps counting (it is already in the figures) and the new one is set
   aside, taking nothing;
2. a new `other` span with an LLM call below it stops counting as one (`ingest/llm_calls.py`),
   the trace's stored spans read within a day of the wrapper's time, at most `TREE_ROWS`; and a
   stored `other` span still counted above a new LLM call (its call arrived later) stops too,
   its move journaled here and run once the batch is inserted (`after`: its rollup rows
   moved, its flag cleared, `storage/clickhouse/wrapper_moves.py`), the calls' traces read for
   such spans within a day of the calls (one read per org; the trees only where one is found);
3. the org's declared dimensions copied into their slots (`rollups/dimensions.py`'s values).

Each batch's turn begins with the orgs' moves an earlier batch left pending (as every write's
does: `writes._write`, `wrapper_moves.take_in`, one read of the journal).

`retain_days` is stamped from the orgs' and projects' span retention (the table's TTL hook).
The orgs' settings come from `DATABASE_URL`, read at most once a minute.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from observatory_core.ingest import dedup
from observatory_core.ingest.llm_calls import call_below, row_rule
from observatory_core.semantic.field_lookups import by_group
from observatory_core.semantic.fields import LLM_OPERATIONS, SLOT_CHARS, SLOT_MARK
from observatory_core.storage.clickhouse import wrapper_moves, writes
from observatory_core.storage.clickhouse.cluster import SAME_REPLICA
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.layout import micro_text
from observatory_core.storage.clickhouse.org_turns import org_turns
from observatory_core.storage.retention import policies
from observatory_core.storage.schema import org_dimensions, orgs

CACHE_SECONDS = 60.0  # as the receiver's prices and projects
TREE_ROWS = 100_000  # stored spans read to settle a batch's wrappers, at most
# How far around a batch's spans their trace's stored spans are read: a call below a wrapper
# (or a nested twin) starts within seconds of it nearly always; a trace spread wider is settled
# on what this reads.
TREE_REACH = timedelta(days=1)
BATCH = writes.BATCH  # rows per insert
POOL_ROWS = 10_000  # stored twin candidates read per batch, at most
REMOVING = "removing"  # a declaration being cleared (`rollups/dimensions.py`)


@dataclass(frozen=True)
class OrgSettings:
    """What a write needs from `DATABASE_URL`: retention days by (org, project) ((org, 0) for
    the org), the orgs that switched off setting twins aside (it is on by default, so an org
    made since the last read has it on), and each org's declared (slot, key)s."""

    retain_days: dict[tuple[int, int], int]
    dedup_off: frozenset[int]
    dimensions: dict[int, tuple[tuple[str, str], ...]]


_CACHE: dict[str, tuple[float, OrgSettings]] = {}
_CACHE_LOCK = threading.Lock()


def org_settings(engine: Engine) -> OrgSettings:
    key = str(engine.url)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
    with engine.connect() as conn:
        days: dict[tuple[int, int], int] = {}
        for policy in policies(conn).values():
            days[(policy.org_id, 0)] = policy.span_days or 0
            for project_id, project_days in policy.project_days.items():
                days[(policy.org_id, project_id)] = project_days or 0
        dedup_off = frozenset(
            conn.execute(select(orgs.c.id).where(orgs.c.dedup_enabled.is_(False))).scalars()
        )
        d = org_dimensions.c
        declared: dict[int, list[tuple[str, str]]] = {}
        for org_id, slot, key_ in conn.execute(
            select(d.org_id, d.slot, d.key).where(d.status != REMOVING)
        ):
            declared.setdefault(org_id, []).append((slot, key_))
    settings = OrgSettings(days, dedup_off, {k: tuple(v) for k, v in declared.items()})
    with _CACHE_LOCK:
        _CACHE[key] = (time.monotonic(), settings)
    return settings


def forget_settings() -> None:
    """Read the orgs' settings again at the next write (tests, after changing them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def write_spans(
    store: SpanStore,
    engine: Engine,
    rows: Iterable[dict[str, Any]],
    *,
    batch_size: int = BATCH,
    on_batch: Callable[[int, int], None] | None = None,
    each_once: bool = False,
) -> int:
    """Complete span rows into `store`, each span once; `engine` is `DATABASE_URL`, read for
    the orgs' settings. Returns how many were new. `each_once`: see `writes.write_spans`."""
    settings = org_settings(engine)
    moves: list[wrapper_moves.Entry] = []  # the batch's, journaled before its insert

    def prepare(store: SpanStore, fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
        batch = [dict(r) for r in fresh]  # a batch that fails is tried again from the input
        moves.clear()
        set_aside_twins(store, batch, settings.dedup_off, datetime.now(UTC))
        settle_wrappers(store, batch)
        moves.extend(settle_stored_wrappers(store, batch))
        fill_dimensions(batch, settings.dimensions)
        return batch

    def after(store: SpanStore) -> None:
        """The batch's calls stored: their wrappers' moves run."""
        wrapper_moves.finish_batch(store, moves)

    return writes.write_spans(
        store,
        rows,
        batch_size=batch_size,
        retain_days=settings.retain_days,
        prepare=prepare,
        on_batch=on_batch,
        turn=org_turns(engine),
        each_once=each_once,
        after=after,
    )


def _time(name: str) -> str:
    """A bound time (`layout.micro_text`) as the span table's type: microseconds kept."""
    return f"toDateTime64(%({name})s, 6, 'UTC')"


def _query_size(store: SpanStore, ids: int) -> dict[str, Any]:
    """The ids are written into the statement (as `writes.stored_starts` does); on a cluster, read
    from the replicas the inserts go to, as that check is (`cluster.SAME_REPLICA`)."""
    return {"max_query_size": 8192 + 40 * ids, **store.naming.settings(SAME_REPLICA)}


# -- twins ------------------------------------------------------------------------------------

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
            f"(start_time >= {_time(f'lo{i}')} AND start_time <= {_time(f'hi{i}')})"
            for i in range(len(windows))
        )
        # a separate twin has a row's tokens and starts within the tolerance of it: the
        # windows alone let every span of a busy minute with common token counts through
        # (up to POOL_ROWS, read and paired in Python)
        keys = _near_keys(rows)
        # one text the engine casts: 3,000 numbers parsed as a statement's literals cost it more
        listed = ",".join(map(str, keys))
        near = f"({near}) AND has(CAST('[{listed}]' AS Array(UInt64)), {_NEAR_KEY})"
        # twins have the same token counts: only stored spans with a batch row's are read
        tokens = sorted({(r["input_tokens"], r["output_tokens"]) for r in rows})
        params: dict[str, Any] = {"org": org_id, "project": project_id, "tokens": tokens}
        for i, (_, lo, hi) in enumerate(windows):
            params[f"lo{i}"], params[f"hi{i}"] = micro_text(lo), micro_text(hi)
        traces = sorted({r["trace_id"] for r in rows})
        first = min(r["start_time"] for r in rows) - TREE_REACH
        last = max(r["start_time"] for r in rows) + TREE_REACH
        listed = writes.plain_list(traces)
        in_traces = (
            f"trace_id IN {listed or '%(traces)s'} AND start_time >= {_time('first')} "
            f"AND start_time <= {_time('last')}"
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
        "AND (input_tokens, output_tokens) IN %(tokens)s "
        f"AND scope_name IS NOT NULL AND duplicate_of IS NULL AND ({where}) "
        "LIMIT %(limit)s"
        for where in wheres
    )
    result = store.client.query(
        f"SELECT * FROM ({reads}) LIMIT 1 BY trace_id, span_id",
        parameters={**params, "ops": sorted(LLM_OPERATIONS), "limit": POOL_ROWS},
        settings=_query_size(store, 2 * ids),
    )
    out = []
    for values in result.result_rows:
        row = dict(zip(_POOL_COLUMNS, values, strict=True))
        for name in ("start_time", "end_time"):
            if row[name].tzinfo is None:
                row[name] = row[name].replace(tzinfo=UTC)
        row["instance"] = _UNREAD  # read only for a stored span that pairs (`_same_instance`)
        out.append(row)
    return out


_UNREAD = object()


def _instance_of(store: SpanStore, row: dict) -> Any:
    """The stored span's `service.instance.id`, read from its attributes once."""
    if row["instance"] is _UNREAD:
        result = store.client.query(
            "SELECT JSONExtractRaw(attributes, 'resource', 'service.instance.id') "
            f"FROM {store.table('spans')} WHERE org_id = %(org)s AND project_id = %(project)s "
            "AND trace_id = %(trace)s AND span_id = %(span)s LIMIT 1",
            parameters={
                "org": row["org_id"],
                "project": row["project_id"],
                "trace": row["trace_id"],
                "span": row["span_id"],
            },
            settings=store.naming.settings(SAME_REPLICA),
        )
        raw = result.result_rows[0][0] if result.result_rows else ""
        row["instance"] = json.loads(raw) if raw else None
    return row["instance"]


def set_aside_twins(
    store: SpanStore, batch: list[dict], dedup_off: frozenset[int], now: datetime
) -> int:
    """Mark each new span that is one call's second copy `duplicate_of` its twin (rows of
    `batch`, changed in place); answers how many."""
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
        else:  # already counted in the figures: it stays the one that counts
            keeper, duplicate = other, row
        settled |= {keeper["id"], duplicate["id"]}
        duplicate["duplicate_of"] = keeper["span_id"]
        duplicate["duplicate_trace_id"] = keeper["trace_id"]
        marked += 1
    for row in batch:
        del row["id"], row["instance"]
    return marked


def _same_instance(store: SpanStore, a: dict, b: dict) -> bool:
    """Where both resources name their instance (`service.instance.id`), it must be one."""
    if a["instance"] is None:
        return True
    other = _instance_of(store, b)
    return other is None or a["instance"] == other


def _take(keeper: dict, duplicate: dict) -> None:
    """What the counted span takes from its twin, as `dedup._take` does in SQL."""
    for name in dedup.COPIED:
        if not keeper[name] and duplicate[name]:
            keeper[name] = duplicate[name]
    if keeper["cost_source"] == "unpriced" and duplicate["cost_source"] != "unpriced":
        for name in dedup.COST:
            keeper[name] = duplicate[name]


# -- LLM calls --------------------------------------------------------------------------------

_TREE_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "operation",
    "model",
    "input_tokens",
    "output_tokens",
)


def _stored_tree(store: SpanStore, org_id: int, wrappers: list[dict]) -> list[dict]:
    """The stored spans of the wrappers' traces around their time, one row per span."""
    lo = min(r["start_time"] for r in wrappers) - TREE_REACH
    hi = max(r["end_time"] for r in wrappers) + TREE_REACH
    traces = sorted({r["trace_id"] for r in wrappers})
    result = store.client.query(
        f"SELECT {', '.join(_TREE_COLUMNS)} FROM {store.table('spans')} "
        "WHERE org_id = %(org)s AND trace_id IN %(traces)s "
        f"AND start_time >= {_time('lo')} AND start_time <= {_time('hi')} "
        "LIMIT 1 BY trace_id, span_id LIMIT %(limit)s",
        parameters={
            "org": org_id,
            "traces": traces,
            "lo": micro_text(lo),
            "hi": micro_text(hi),
            "limit": TREE_ROWS,
        },
        settings=_query_size(store, len(traces)),
    )
    return [dict(zip(_TREE_COLUMNS, values, strict=True)) for values in result.result_rows]


def settle_wrappers(store: SpanStore, batch: list[dict]) -> int:
    """Clear `llm_call` on the batch's `other` spans with an LLM call below them, among the
    batch and the stored spans of their trace; answers how many."""
    wrappers = [r for r in batch if r["operation"] == "other" and r["llm_call"]]
    if not wrappers:
        return 0
    cleared = 0
    by_org: dict[int, list[dict]] = {}
    for row in wrappers:
        by_org.setdefault(row["org_id"], []).append(row)
    for org_id, mine in by_org.items():
        traces = {r["trace_id"] for r in mine}
        spans = [r for r in batch if r["org_id"] == org_id and r["trace_id"] in traces]
        seen = {(r["trace_id"], r["span_id"]) for r in spans}
        spans += [
            r
            for r in _stored_tree(store, org_id, mine)
            if (r["trace_id"], r["span_id"]) not in seen
        ]
        children: dict[tuple[str, str], list[dict]] = {}
        for r in spans:
            if r["parent_span_id"]:
                children.setdefault((r["trace_id"], r["parent_span_id"]), []).append(r)
        for wrapper in mine:
            if call_below(wrapper, children):
                wrapper["llm_call"] = False
                cleared += 1
    return cleared


_WRAPPER_COLUMNS = ("project_id", "trace_id", "span_id", "parent_span_id", "start_time")


def _stored_wrappers(store: SpanStore, org_id: int, calls: list[dict]) -> list[dict]:
    """The stored `other` spans still counted as LLM calls in the calls' traces, around their
    time (`TREE_REACH`): the only spans a late LLM call can stop counting."""
    lo = min(r["start_time"] for r in calls) - TREE_REACH
    hi = max(r["end_time"] for r in calls) + TREE_REACH
    traces = sorted({r["trace_id"] for r in calls})
    listed = writes.plain_list(traces)
    params: dict[str, Any] = {"org": org_id, "lo": micro_text(lo), "hi": micro_text(hi)}
    if listed is None:
        params["traces"] = traces
    result = store.client.query(
        f"SELECT {', '.join(_WRAPPER_COLUMNS)} FROM {store.table('spans')} "
        f"WHERE org_id = %(org)s AND trace_id IN {listed or '%(traces)s'} "
        f"AND start_time >= {_time('lo')} AND start_time <= {_time('hi')} "
        "AND operation = 'other' AND llm_call LIMIT %(limit)s",
        parameters={**params, "limit": TREE_ROWS},
        settings=_query_size(store, len(traces)),
    )
    out = []
    for values in result.result_rows:
        row = dict(zip(_WRAPPER_COLUMNS, values, strict=True))
        if row["start_time"].tzinfo is None:
            row["start_time"] = row["start_time"].replace(tzinfo=UTC)
        out.append(row)
    return out


def _rooted_here(call: dict, parent_of: dict[tuple[int, str, str], str | None]) -> bool:
    """Whether `call`'s chain of parents ends at a root among the batch's spans."""
    org, trace, node, seen = call["org_id"], call["trace_id"], call["parent_span_id"], set()
    while node is not None and node not in seen:  # a cycle of bad parent ids ends
        seen.add(node)
        if (org, trace, node) not in parent_of:
            return False  # its parent is not in the batch: it may be stored
        node = parent_of[(org, trace, node)]
    return node is None


def settle_stored_wrappers(store: SpanStore, batch: list[dict]) -> list[wrapper_moves.Entry]:
    """A late LLM call under a stored wrapper (`llm_calls.settle_stored` elsewhere): the stored
    `other` spans counted as LLM calls above the batch's LLM calls are to stop counting, in the
    spans and the rollups: each org's move journaled, answered, and run once the batch is
    inserted (`wrapper_moves.py`). No read when every call's ancestors came in the batch, else
    one read per org when none is stored in those calls' traces."""
    calls = [r for r in batch if row_rule(r) and r.get("parent_span_id")]
    if not calls or store.naming.cluster:  # no move on a cluster yet
        return []
    # a call whose ancestors up to its root all came in this batch has none stored
    parent_of = {(r["org_id"], r["trace_id"], r["span_id"]): r["parent_span_id"] for r in batch}
    calls = [r for r in calls if not _rooted_here(r, parent_of)]
    if not calls:
        return []
    by_org: dict[int, list[dict]] = {}
    for row in calls:
        by_org.setdefault(row["org_id"], []).append(row)
    entries = []
    for org_id, mine in by_org.items():
        wrappers = {(r["trace_id"], r["span_id"]): r for r in _stored_wrappers(store, org_id, mine)}
        if not wrappers:
            continue  # the common case
        traces = {t for t, _ in wrappers}
        mine = [r for r in mine if r["trace_id"] in traces]
        # the spans between a call and its wrapper: the batch's and the stored ones
        parents: dict[tuple[str, str], str | None] = {
            (r["trace_id"], r["span_id"]): r["parent_span_id"]
            for r in _stored_tree(store, org_id, mine)
        }
        for r in batch:
            if r["org_id"] == org_id and r["trace_id"] in traces:
                parents[(r["trace_id"], r["span_id"])] = r["parent_span_id"]
        above: dict[tuple[str, str], list[dict]] = {}  # wrapper -> the calls below it
        for call in mine:
            trace, node, seen = call["trace_id"], call["parent_span_id"], set()
            while node and node not in seen:  # a cycle of bad parent ids ends
                seen.add(node)
                if (trace, node) in wrappers:
                    above.setdefault((trace, node), []).append(call)
                node = parents.get((trace, node))
        if above:
            moved = {}
            for key, below in above.items():
                r = wrappers[key]
                wrapper = wrapper_moves.Wrapper(
                    r["project_id"], r["trace_id"], r["span_id"], r["start_time"]
                )
                moved[wrapper] = tuple(
                    wrapper_moves.Call(
                        c["project_id"], c["trace_id"], c["span_id"], c["start_time"]
                    )
                    for c in below
                )
            entries.append(wrapper_moves.journal(store, org_id, moved))
    return entries


# -- dimensions -------------------------------------------------------------------------------


def fill_dimensions(batch: list[dict], declared: dict[int, tuple[tuple[str, str], ...]]) -> None:
    """Each row's declared slots as `rollups/dimensions.py` writes them: the mark and the value
    cut to `SLOT_CHARS`, '' for a span without one."""
    fields = {org: [(slot, by_group(key)) for slot, key in keys] for org, keys in declared.items()}
    for row in batch:
        for slot, field in fields.get(row["org_id"], ()):
            value = field.row_value(row)
            row[slot] = "" if value is None else SLOT_MARK + str(value)[:SLOT_CHARS]
