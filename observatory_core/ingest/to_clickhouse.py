"""Ingest into the ClickHouse span store: what the write path does on the other stores, done
before the insert, because the engine's views fold each inserted span into the rollups and
trace totals at once and cannot take it back out (docs/span-store-internals.md, "Writes and the
write turn").

Per batch, under the store's write turn (this process's, and the batch's orgs' across
processes, `storage/clickhouse/org_turns.py`), after the spans already stored are dropped
(`storage/clickhouse/writes.py`) and before the rest is inserted (`prepare`):

1. twin calls set aside (`ingest/dedup.py`'s rules, `ingest/span_store_twins.py`): the copy
   `dedup.pick_keeper` keeps counts and takes what only its twin has, new or stored; a stored
   copy set aside, or taking fields, is restated once the batch is inserted (journaled here
   as a move of that span, `storage/clickhouse/wrapper_moves.py`);
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

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from observatory_core.ingest.llm_calls import call_below, row_rule
from observatory_core.ingest.span_store_twins import (
    TREE_REACH,
    Restatement,
    journal_twins,
    set_aside_twins,
)
from observatory_core.semantic.field_lookups import by_group
from observatory_core.semantic.fields import SLOT_CHARS, SLOT_MARK
from observatory_core.storage.clickhouse import wrapper_moves, writes
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.layout import bound_time, micro_text
from observatory_core.storage.clickhouse.org_turns import org_turns
from observatory_core.storage.retention import policies
from observatory_core.storage.schema import org_dimensions, orgs

CACHE_SECONDS = 60.0  # as the receiver's prices and projects
TREE_ROWS = 100_000  # stored spans read to settle a batch's wrappers, at most
BATCH = writes.BATCH  # rows per insert
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
        restated: list[Restatement] = []
        set_aside_twins(store, batch, settings.dedup_off, datetime.now(UTC), restated)
        moves.extend(journal_twins(store, restated))
        settle_wrappers(store, batch)
        moves.extend(settle_stored_wrappers(store, batch))
        fill_dimensions(batch, settings.dimensions)
        return batch

    def after(store: SpanStore) -> None:
        """The batch's calls stored: their wrappers' moves, and its twins' restatements,
        run."""
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
        f"AND start_time >= {bound_time('lo')} AND start_time <= {bound_time('hi')} "
        "LIMIT 1 BY trace_id, span_id LIMIT %(limit)s",
        parameters={
            "org": org_id,
            "traces": traces,
            "lo": micro_text(lo),
            "hi": micro_text(hi),
            "limit": TREE_ROWS,
        },
        settings=writes.ids_query_size(store, len(traces)),
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
        f"AND start_time >= {bound_time('lo')} AND start_time <= {bound_time('hi')} "
        "AND operation = 'other' AND llm_call LIMIT %(limit)s",
        parameters={**params, "limit": TREE_ROWS},
        settings=writes.ids_query_size(store, len(traces)),
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
