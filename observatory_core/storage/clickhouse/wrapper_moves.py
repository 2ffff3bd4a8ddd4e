"""A stored `other` wrapper that stops counting as an LLM call (its LLM call arrived in a later
batch: `ingest/llm_calls.py`, `settle_stored` on the other stores): its figures moved in the
rollups from the rows keyed `llm_call = true` to those keyed false, exactly as if it had never
counted as one, then its flag cleared in `spans` (docs/span-store-internals.md,
"Wrapper moves and their journal"). The same move
restates a stored twin (`ingest/span_store_twins.py`): a copy set aside (`duplicate_of` set) or
one taking its new twin's fields (`Entry.sets`: each span's columns as they are to be). Its
partials out are those of the span as it stands, its partials in the view's expressions over
the span as it is to be (`wrapper_move_spans.py`: none for a copy set aside), a bucket the in
rows reach is never emptied, and the minute's extremes are judged with them; its trace totals
and hours' actors are restated too (`move_traces.py`), which a wrapper's never are.

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
   after its bound: a flag cleared after that read would have the wrapper moved twice). Each
   wait is for the org's own rows (`wrapper_move_waits.py`): another org's failing mutation
   holds back no move.

Journaled (`wrapper_move_journal.py`) under the org's write turn before the batch's insert,
run after it (`finish`): the insert is the move's commit point. A failure part-way is logged
and raised (the batch is answered 503, its spans stored), and the org's next write, the
resend or any other batch, takes the move in before anything else of the org is written
(`take_in`): its inserts not journaled as sent are sent, the one sent last is sent again
when the counts journaled just before it are still there (not while the server lists an
insert into its table: `_none_running`), the deletes, extremes and flags are judged and sent
again. A move journaled by a batch whose insert failed is dropped there
(no call of it stored, nothing of it sent). Every write takes in (`writes._write`), and
before the process's write lock waits for the org's move mutations still running (`ready`),
holding an org whose wait runs out: its batches refused at once for `HOLD_S`, so one org's
stuck mutation does not keep the other orgs' writes waiting. Not on a cluster yet.

A move that changes no column a figure reads (a twin taking only the error type and message:
no rollup key or partial, trace total or hour's actor reads either) takes the light path: its
plan holds nothing, and the move is its `spans` row's mutation alone (step 4's last
statement), journaled and taken in as any other.

This module journals and runs a move; what it inserts, empties and mutates is judged by
`wrapper_move_plan.py`.
"""

from __future__ import annotations

import logging
from typing import Any

from observatory_core.base.errors import DatabaseUnavailable, first_line
from observatory_core.storage.clickhouse import move_traces
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from observatory_core.storage.clickhouse import wrapper_move_plan as planning
from observatory_core.storage.clickhouse import wrapper_move_resends as resends
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.ddl import ACTORS
from observatory_core.storage.clickhouse.layout import micro_text
from observatory_core.storage.clickhouse.wrapper_move_holds import (
    BUCKET,
    FLAGS,
    ROLLUPS,
    SETS,
    TRACE,
    mutating,
    wait_for_earlier,
)
from observatory_core.storage.clickhouse.wrapper_move_journal import Call, Entry
from observatory_core.storage.clickhouse.wrapper_move_reads import (
    Wrapper,
    _utc,
)
from observatory_core.storage.clickhouse.wrapper_move_spans import (
    Sets,
    _new_values,
    _set_groups,
    _still,
    _wrappers_where,
)
from observatory_core.storage.clickhouse.wrapper_move_waits import wait

log = logging.getLogger("observatory.span_store")

_QUEUED = {"mutations_sync": 0, "lightweight_deletes_sync": 0}
FLAGS_WAIT_S = 15.0  # the flags' mutation, and this move's rollup mutations, after it


def _clear_flags(
    store: SpanStore, org_id: int, wrappers: list[Wrapper], sets: dict | None = None
) -> None:
    """The wrappers' flag cleared (`sets`: a twin's columns set), one mutation per month
    (`IN PARTITION`: the engine then goes through that month's parts only), queued: `finish`
    waits for the org's rows."""
    by_month: dict[str, list[Wrapper]] = {}
    for w in wrappers:
        by_month.setdefault(f"{_utc(w.start_time):%Y%m}", []).append(w)
    for month, mine in sorted(by_month.items()):
        params: dict[str, Any] = {"org": org_id}
        params["projects"] = sorted({w.project_id for w in mine})
        where = _wrappers_where(mine, params)
        if sets is None:
            change, still = "llm_call = false", "llm_call"
        else:
            groups = _set_groups(Entry(org_id, dict.fromkeys(mine, ()), sets=sets))
            still = _still(groups, params)
            change = ", ".join(f"{name} = {expr}" for name, expr in _new_values(groups))
        store.client.command(
            f"ALTER TABLE {store.table('spans')} UPDATE {change} IN PARTITION {month} "
            f"WHERE {where} AND {still}",
            parameters=params,
            settings={**_QUEUED, "max_query_size": 262_144 + 200 * len(mine)},
        )


def _kind_of(entry: Entry) -> str:
    """What the move does, for its messages."""
    return "wrappers out of the LLM calls" if entry.sets is None else "twins restated"


def _insert(store: SpanStore, rows: list[dict[str, Any]], table: str = "rollup_1min") -> None:
    names = list(rows[0])
    store.client.insert(
        store.table(table),
        [[r[n] for n in names] for r in rows],
        column_names=names,
    )


def _stored_calls(store: SpanStore, entry: Entry) -> set[tuple[str, str]]:
    """(trace, span) of the entry's calls that the spans table holds."""
    calls = {c for cs in entry.wrappers.values() for c in cs}
    if not calls:
        return set()
    result = store.client.query(
        f"SELECT DISTINCT trace_id, span_id FROM {store.table('spans')} "
        "WHERE org_id = %(org)s AND project_id IN %(projects)s "
        "AND start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
        "AND start_time <= toDateTime64(%(hi)s, 6, 'UTC') "
        "AND (project_id, trace_id, span_id) IN %(ids)s",
        parameters={
            "org": entry.org_id,
            "projects": sorted({c.project_id for c in calls}),
            "lo": micro_text(min(c.start_time for c in calls)),
            "hi": micro_text(max(c.start_time for c in calls)),
            "ids": sorted((c.project_id, c.trace_id, c.span_id) for c in calls),
        },
        settings={"max_query_size": 262_144 + 100 * len(calls)},
    )
    return {(t, s) for t, s in result.result_rows}


def journal(
    store: SpanStore,
    org_id: int,
    wrappers: dict[Wrapper, tuple[Call, ...]],
    sets: dict[Wrapper, Sets] | None = None,
) -> Entry:
    """The move of `wrappers` (each with the calls below it) journaled, before the insert of
    the batch that brings the calls; `finish` runs it after that insert. `sets`: each span's
    columns as they are to be (a twin restated by the batch's copy, its `call`); None: the
    wrappers stop counting as LLM calls."""
    entry = Entry(org_id, dict(wrappers), sets=None if sets is None else dict(sets))
    move_journal.record(store, entry)
    return entry


def take_in(store: SpanStore, org_ids: list[int]) -> int:
    """The orgs' moves left pending by a batch that failed (its insert, or the move part-way),
    each finished when a call of it is stored, else dropped (nothing of it landed: it runs
    after the insert). Run under the orgs' write turns before anything else of theirs is
    written. A move that fails again refuses the batch as `DatabaseUnavailable` (503: the
    store's state, not the rows', which `ingest/isolate.py` would split and refuse one by
    one). Answers how many were pending."""
    if store.naming.cluster or not org_ids or move_journal.clean(store, org_ids):
        return 0
    entries = move_journal.pending(store, org_ids)
    for entry in entries:
        log.warning(
            "Span store: org %s's move of %d stored spans (%s) was left pending "
            "(step %d); taken in now.",
            entry.org_id,
            len(entry.wrappers),
            _kind_of(entry),
            entry.step,
        )
        try:
            finish(store, entry, stored=None)
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # the store's state, not the batch's rows: retried, not split
            raise DatabaseUnavailable(
                f"The span store could not finish org {entry.org_id}'s pending move of "
                "stored spans' figures (wrappers out of the LLM calls, twins restated) "
                f"({first_line(exc)}); its batches are refused until it can, retry."
            ) from exc
    move_journal.cleaned(store, org_ids)
    return len(entries)


def finish_batch(store: SpanStore, entries: list[Entry]) -> None:
    """The moves a batch journaled, run after its insert (`ingest/to_clickhouse.py`'s
    `after`). A failure is the store's state, not the rows' (they are stored): raised as
    `DatabaseUnavailable` (503, the batch retried; `ingest/isolate.py` would split it and
    report stored spans refused), the move left to the org's next write (`take_in`)."""
    while entries:
        entry = entries.pop(0)
        try:
            finish(store, entry)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            raise DatabaseUnavailable(
                f"The span store stored org {entry.org_id}'s spans but could not yet move "
                "the figures of the stored spans they change (wrappers out of the LLM calls, "
                f"twins restated) ({first_line(exc)}); the org's next write finishes it, retry."
            ) from exc


def finish(store: SpanStore, entry: Entry, stored: bool | None = True) -> int:
    """Stop the entry's wrappers (stored spans of its org counted as LLM calls) counting as
    LLM calls, in the rollups at every grain and then in the spans (see above), from where
    its journal says it got to. `stored`: whether its calls are stored (True after the
    batch's insert; None: read). Answers how many minute rows moved."""
    org_id = entry.org_id
    try:
        wait_for_earlier(store, org_id)
        if entry.plan is None:
            if stored is None:
                found = _stored_calls(store, entry)
                entry.wrappers = {
                    w: calls
                    for w, calls in entry.wrappers.items()
                    if any((c.trace_id, c.span_id) in found for c in calls)
                }
            plan = planning.plan(store, org_id, entry) if entry.wrappers else None
            if plan is None:  # no call stored, or no span still to change: nothing to move
                entry.done = True
                move_journal.record(store, entry)
                return 0
            entry.plan = plan  # journaled with the first insert, before it is sent
            if not any(planning.inserts(plan).values()):  # none: journaled before any statement
                move_journal.record(store, entry)
        plan = entry.plan
        wrappers = list(entry.wrappers)
        inserts = planning.inserts(plan)
        if entry.sending is not None:  # sent last time, not known to have landed
            resends.none_running(store, entry)
            resends.resend(store, entry, inserts[entry.sending], _insert)
        for target, rows in inserts.items():  # each insert once: journaled before it is sent
            if rows and target not in entry.landed:
                entry.sending = target
                entry.before = resends.counts(store, org_id, target, rows)
                move_journal.record(store, entry)
                _insert(store, rows, resends.table_of(target))
                entry.landed.append(target)
                entry.sending, entry.before = None, {}
        move_traces.add_actors(store, plan.actors.get("add", []))
        mutations = planning.mutations(store, org_id, plan, wrappers)
        mutations += move_traces.trace_mutations(store, org_id, plan.traces, wrappers)
        mutations += move_traces.actor_deletes(store, org_id, plan.actors.get("drop", []), wrappers)
        # queued, not waited on (the next move waits for them first): each waited on took
        # about a second on chDB, most of it the engine's queue; `IN PARTITION` (the bucket's
        # month) keeps each to that month's parts. A read while one runs sees some rows of the
        # key with the new extremes and some with the old (the old extreme, as before the
        # move), or some of an emptied key's rows (the wrappers' own: no negative row there)
        mutating(store, org_id, True)  # before the first: one may be queued though it raises
        for statement, params in mutations:
            store.client.command(statement, parameters=params, settings=_QUEUED)
        _clear_flags(store, org_id, wrappers, entry.sets)  # last of the statements
        # waited on, bounded, so the next batch's reads see the flags, and the batch is
        # answered with the figures whole (a read while an emptied key's delete runs counts
        # the wrapper twice among all spans: in the rows keyed true still, and false already).
        # Not done in time (another org's failing mutation of the same parts, or a long one
        # ahead in the queue): logged, not raised; the engine finishes them, and the org's
        # next move waits for them before it reads the wrappers still flagged
        waits = [("spans", FLAGS if entry.sets is None else SETS)]
        if mutations:
            waits += [(t, BUCKET) for t in ROLLUPS]
            waits += [(ACTORS, BUCKET)] if plan.actors.get("drop") else []
            waits += [("trace_totals", TRACE)] if plan.traces else []
        late = wait(store, org_id, waits, FLAGS_WAIT_S)
        mutating(store, org_id, bool(late))
        if late:
            log.warning(
                "Span store: org %s's rows of moved spans (%s) still being rewritten in %s "
                "after %.0f s (system.mutations).",
                org_id,
                _kind_of(entry),
                ", ".join(late),
                FLAGS_WAIT_S,
            )
        entry.done = True
        move_journal.record(store, entry)
    except Exception:
        log.error(
            "Span store: moving org %s's stored spans %s (%s) failed part-way "
            "(inserts landed: %s; sent, not known to have landed: %s); the org's next write "
            "finishes it.",
            org_id,
            [(w.trace_id, w.span_id) for w in entry.wrappers],
            _kind_of(entry),
            entry.landed or "none",
            entry.sending or "none",
        )
        raise
    return len(plan.rows)
