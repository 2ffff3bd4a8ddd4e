"""Each org's wrapper moves not finished yet (`wrapper_moves.py`, docs/span-store-internals.md
"Wrapper moves and their journal"), in the span store's `wrapper_move_journal` (schema version 9),
so a move that fails part-way is finished, or dropped, by what it recorded, not judged again from
what the rollups count.

A move is journaled before the insert of the batch that brings its LLM calls (the wrappers,
and for each the calls below it), and runs after that insert: the insert is its commit point
(a move whose calls are not stored never began). Before each of its inserts (a grain's rows)
it records the plan (the minute rows it moves, which buckets it empties, where each negative
row goes: fixed before its first statement), the grains landed, and the span count of each
(bucket, key) the insert goes to; last, `done`. The org's write turn takes its pending moves
in before anything else of the org is written (`wrapper_moves.take_in`), so nothing changes
those counts between: an insert not known to have landed has (its rows' spans more) or has
not (the same count). The rest of a move (deletes, extremes judged on what is there, the
flags) can be sent again.

A twin restated (`ingest/span_store_twins.py`) is journaled the same way: the stored copy as
the "wrapper", its new twin as the "call", and the columns the copy is to take (`sets`); its
plan holds the minute rows it adds too (`added`), its trace totals' rows and its hours'
actors, and its trace totals' insert is judged by each trace's span count and cost. A state
journaled before twins were restated (no `sets`, no `added`) reads as a wrapper's move.

Each record is a row holding the whole state, the newest `step` the one read (a
ReplacingMergeTree); a move's rows are deleted together `JOURNAL_DAYS` after it began.
A folder of the in-process engine (chDB) is written by this process alone: the orgs it found
nothing pending for, and has journaled nothing for since, are not read again (`clean`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.layout import JOURNAL_EXPIRES, micro_text
from observatory_core.storage.clickhouse.wrapper_move_reads import Wrapper, _utc

TABLE = "wrapper_move_journal"
# in-process stores only: the orgs with no move pending, as this process (their only writer)
# knows; an org leaves it as a move of it is journaled unfinished
_CLEAN: dict[Any, set[int]] = {}
_CLEAN_LOCK = threading.Lock()
_JOURNALED: set[Any] = set()  # the stores found to have the table (it is never dropped)


@dataclass(frozen=True)
class Call:
    """An LLM call below a wrapper: the move stands only once one of its wrapper's is stored."""

    project_id: int
    trace_id: str
    span_id: str
    start_time: datetime


@dataclass(frozen=True)
class Plan:
    """What a move changes, fixed before its first rollup statement: the wrappers' minute
    partials keyed true (`rows`), the finest grain each one's negative row goes to (None: its
    key emptied at every grain), and (grain, bucket, key) -> whether the move empties it."""

    rows: list[dict[str, Any]]
    finest: list[str | None]
    emptied: dict[tuple[str, datetime, tuple], bool]
    # the spans' minute partials as they are to stand (None: a journal of before twins were
    # restated, a wrapper move's, whose partials move keyed false); the trace totals' and the
    # hours' actors' changes (`move_traces.py`)
    added: list[dict[str, Any]] | None = None
    traces: list[dict[str, Any]] = field(default_factory=list)
    actors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


Group = tuple[Any, tuple]  # a rollup row's (bucket, key); a trace total's (project, (trace,))


@dataclass
class Entry:
    """A move as journaled: the wrappers (each with its calls), the plan once made, the grains
    whose insert landed, the grain whose insert was sent last (not known to have landed) with
    the span count of each of its (bucket, key)s just before, and whether it is done
    (finished, or dropped: no call of it stored)."""

    org_id: int
    wrappers: dict[Wrapper, tuple[Call, ...]]
    move_id: str = field(default_factory=lambda: uuid4().hex)
    begun_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    step: int = 0
    plan: Plan | None = None
    landed: list[str] = field(default_factory=list)
    sending: str | None = None
    before: dict[Group, Any] = field(default_factory=dict)
    done: bool = False
    # each span's columns as they are to be (None: a wrapper move, `llm_call` false)
    sets: dict[Wrapper, dict[str, Any]] | None = None


def _value(value: Any) -> Any:
    """A row's value as JSON: times and maps tagged, read back by `_read_value`."""
    if isinstance(value, datetime):
        return {"t": micro_text(_utc(value))}
    if isinstance(value, dict):
        return {"m": [[k, v] for k, v in value.items()]}
    return value


def _read_value(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            return datetime.strptime(value["t"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        return {k: v for k, v in value["m"]}
    return value


def _time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: _value(v) for k, v in row.items()} for row in rows]


def _read_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: _read_value(v) for k, v in row.items()} for row in rows]


def _state(entry: Entry) -> str:
    wrappers = [
        [
            [w.project_id, w.trace_id, w.span_id, micro_text(_utc(w.start_time))],
            [[c.project_id, c.trace_id, c.span_id, micro_text(_utc(c.start_time))] for c in calls],
        ]
        for w, calls in entry.wrappers.items()
    ]
    plan = None
    if entry.plan is not None:
        p = entry.plan
        plan = {
            "rows": _rows(p.rows),
            "finest": p.finest,
            "emptied": [[g, micro_text(_utc(b)), list(k), e] for (g, b, k), e in p.emptied.items()],
            "added": None if p.added is None else _rows(p.added),
            "traces": [
                {k: _rows([v])[0] if isinstance(v, dict) else v for k, v in t.items()}
                for t in p.traces
            ],
            "actors": {k: _rows(v) for k, v in p.actors.items()},
        }
    before = [[_value(b), list(k), n] for (b, k), n in entry.before.items()]
    sets = None
    if entry.sets is not None:
        sets = [[[w.project_id, w.trace_id, w.span_id], v] for w, v in entry.sets.items()]
    return json.dumps(
        {
            "wrappers": wrappers,
            "plan": plan,
            "landed": entry.landed,
            "sending": entry.sending,
            "before": before,
            "sets": sets,
        }
    )


def _entry(
    org_id: int, move_id: str, begun_at: datetime, step: int, done: int, state: str
) -> Entry:
    raw = json.loads(state)
    wrappers = {
        Wrapper(w[0], w[1], w[2], _time(w[3])): tuple(
            Call(c[0], c[1], c[2], _time(c[3])) for c in calls
        )
        for w, calls in raw["wrappers"]
    }
    plan = None
    if raw["plan"] is not None:
        p = raw["plan"]
        plan = Plan(
            _read_rows(p["rows"]),
            p["finest"],
            {(g, _time(b), tuple(k)): e for g, b, k, e in p["emptied"]},
            None if p.get("added") is None else _read_rows(p["added"]),
            [
                {k: _read_rows([v])[0] if isinstance(v, dict) else v for k, v in t.items()}
                for t in p.get("traces", [])
            ],
            {k: _read_rows(v) for k, v in p.get("actors", {}).items()},
        )
    # a bucket as its text (journaled before twins were restated), tagged, or a project
    before = {
        (_time(b) if isinstance(b, str) else _read_value(b), tuple(k)): n
        for b, k, n in raw["before"]
    }
    sets = None
    if raw.get("sets") is not None:
        by_id = {(w.project_id, w.trace_id, w.span_id): w for w in wrappers}
        sets = {by_id[tuple(w)]: v for w, v in raw["sets"]}
    return Entry(
        org_id,
        wrappers,
        move_id,
        _utc(begun_at),
        step,
        plan,
        raw["landed"],
        raw["sending"],
        before,
        bool(done),
        sets,
    )


def clean(store: SpanStore, org_ids: list[int]) -> bool:
    """Whether the orgs are known to have no move pending (an in-process store's), or the
    store has no journal (its schema before version 9: opened without applying it, as tests
    make older stores; no move can have been journaled there)."""
    with _CLEAN_LOCK:
        if store.target.in_process and set(org_ids) <= _CLEAN.get(store.target, set()):
            return True
        if store.target in _JOURNALED:
            return False
    found = store.client.query(f"EXISTS TABLE {store.table(TABLE)}").result_rows
    exists = bool(found and found[0][0])
    if exists:
        with _CLEAN_LOCK:
            _JOURNALED.add(store.target)
    return not exists


def cleaned(store: SpanStore, org_ids: list[int]) -> None:
    """The orgs' pending moves all taken in (an in-process store's)."""
    if store.target.in_process:
        with _CLEAN_LOCK:
            _CLEAN.setdefault(store.target, set()).update(org_ids)


def record(store: SpanStore, entry: Entry) -> None:
    """The entry's state now, as its newest row."""
    with _CLEAN_LOCK:  # before the row: it may be written though this raises
        _CLEAN.get(store.target, set()).discard(entry.org_id)
    entry.step += 1
    row = [entry.org_id, entry.move_id, entry.begun_at, entry.step, int(entry.done), _state(entry)]
    store.client.insert(
        store.table(TABLE),
        [row],
        column_names=["org_id", "move_id", "begun_at", "step", "done", "state"],
    )


def pending(store: SpanStore, org_ids: list[int]) -> list[Entry]:
    """The orgs' moves not done, oldest first: one read of the few rows each move left, those
    the TTL has still to delete left out (all of a move's at once: their `begun_at`, judged by
    the TTL's own expression, `layout.JOURNAL_EXPIRES`), so an older row of a move never
    stands in for a newer one deleted first."""
    kept = f"org_id IN %(orgs)s AND {JOURNAL_EXPIRES} > now()"
    result = store.client.query(
        "SELECT org_id, move_id, begun_at, max(step), argMax(done, step), argMax(state, step) "
        f"FROM {store.table(TABLE)} WHERE {kept} AND (org_id, move_id) IN ("
        f"SELECT org_id, move_id FROM {store.table(TABLE)} WHERE {kept} "
        "GROUP BY org_id, move_id HAVING max(done) = 0) "  # the states of those alone read
        "GROUP BY org_id, move_id, begun_at ORDER BY begun_at, move_id",
        parameters={"orgs": sorted(set(org_ids))},
    )
    return [_entry(*row) for row in result.result_rows]
