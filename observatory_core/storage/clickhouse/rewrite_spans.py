"""Stored spans rewritten with new field values (`remap`, docs/span-store-internals.md "Remap"),
each span kept once, and the rollups and trace totals of what changed rebuilt.

`spans` is a `ReplacingMergeTree(version)`: a span is rewritten as a new copy of its row (the
same identity, a higher version), and the old copy deleted by one lightweight DELETE per flush
of every copy in the flushed (project, day)s but the newest (`delete_older`). Not an `ALTER
UPDATE`: a mutation rewrites the updated columns of every part holding a changed row (the
attributes and texts among them), so remap's changes spread over a month would rewrite that
month's columns once per batch; a new copy writes each changed span once, and the delete
rewrites only the parts' row mask.

The insert fires the views, which add the new copy to the rollups and trace totals beside the
old one, and no view can take a row back out. So each (org, project, UTC day) the changed spans
fall in is rebuilt from its spans: its rows deleted at every grain (one synchronous lightweight
DELETE per grain for a flush's days), then its minute rows inserted from its spans, the newest
copy of each (`LIMIT 1 BY`, as `rebuild.py` reads them), by the minute view's own expressions;
the hour's and day's views fold them as any minute row. The trace totals of the changed spans'
traces (per project) likewise. Only then are the old copies deleted: a run stopped between the
insert and the delete leaves copies, which the next run finds first (`leftover_copies`) and
settles the same way (their days and traces rebuilt, the older copies deleted). Each step under
the org's write turn, so no ingest insert of the org lands between a delete and its rebuild.
No span of a (project, day) that may hold a span past its retention stamp is rewritten
(`Rewriter.unexpired`). Not on a cluster (refused by
the caller).

A read while a day is rebuilt sees that org's project-day without rollup rows for the moment
between the delete and the insert; a span rewritten is listed twice until its day is flushed
(`Rewriter`: at most `FLUSH_ROWS` spans, or when the walk leaves the day).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.clickhouse import layout, rollup_select
from observatory_core.storage.clickhouse.cluster import delete_sync
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.ddl import _counted_spans
from observatory_core.storage.clickhouse.fold_copies import WAIT_S, _older_copies
from observatory_core.storage.clickhouse.layout import micro_text
from observatory_core.storage.clickhouse.org_turns import OrgTurns
from observatory_core.storage.clickhouse.restamp import settle
from observatory_core.storage.clickhouse.view_gaps import _extent, newest_spans
from observatory_core.storage.clickhouse.writes import (
    EXPIRY_MARGIN,
    JsonText,
    as_columns,
    org_turn,
)

PAGE = 2_000  # spans read per page (every column)
FLUSH_ROWS = 100_000  # rewritten spans held (their keys) before their days and traces are rebuilt
TRACES = 10_000  # traces per trace-totals statement
# (project, day)s rebuilt per statement and write turn: a writer of the org waits on the turn
# (`org_turns.WAIT_S`, 120 s) for at most this many days' rebuild
DAYS = 7
_NAMES = layout.span_column_names()
_TIMES = tuple(c.name for c in layout.span_columns() if layout.TIME in c.type)
_DAY = timedelta(days=1)
_RAW = "_json_text"  # a read row's JSON columns as stored


def _utc(value: Any) -> Any:
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and not value.tzinfo else value


def _row(names: tuple[str, ...], values: tuple) -> dict[str, Any]:
    """A stored row as the write path's rows are: times with their zone, JSON decoded."""
    row = dict(zip(names, values, strict=True))
    for name in _TIMES:
        if name in row:
            row[name] = _utc(row[name])
    raw = {}
    for name in layout.JSON_TEXT:
        if name in row and isinstance(row[name], str):
            raw[name] = row[name]
            row[name] = json.loads(row[name]) if row[name] else None
    row[_RAW] = raw  # written back as it is when unchanged (`Rewriter.rewrite`)
    return row


def org_projects(store: SpanStore, org_id: int) -> list[int]:
    """The org's projects holding spans (the table key's second column)."""
    rows = store.client.query(
        f"SELECT DISTINCT project_id FROM {store.table('spans')} WHERE org_id = %(org)s "
        "ORDER BY project_id",
        parameters={"org": org_id},
    ).result_rows
    return [int(p) for (p,) in rows]


def count_spans(store: SpanStore, org_id: int | None, since: datetime | None) -> int:
    """How many spans of the org (or all) started at or after `since` the store holds."""
    where = ["1"]
    params: dict[str, Any] = {}
    if org_id is not None:
        where.append("org_id = %(org)s")
        params["org"] = org_id
    if since is not None:
        where.append("start_time >= toDateTime64(%(since)s, 6, 'UTC')")
        params["since"] = micro_text(since)
    ((n,),) = store.client.query(
        f"SELECT count() FROM {store.table('spans')} WHERE {' AND '.join(where)}",
        parameters=params,
    ).result_rows
    return int(n)


def pages(
    store: SpanStore,
    org_id: int,
    *,
    columns: tuple[str, ...] = _NAMES,
    since: datetime | None = None,
    size: int = PAGE,
) -> Iterator[list[dict[str, Any]]]:
    """The org's spans (`columns`, and always the identity, start and version) in keyset pages
    of the table's key: project by project, (start, trace, span) ascending, each page one read
    of the key's range from the last row on, so the last page costs what the first does."""
    names = tuple(dict.fromkeys(("project_id", "start_time", "trace_id", "span_id", "version")))
    names += tuple(c for c in columns if c not in names)
    select = ", ".join(f"`{n}`" for n in names)
    for project in org_projects(store, org_id):
        params: dict[str, Any] = {"org": org_id, "project": project, "size": size}
        after = ""
        if since is not None:
            params["since"] = micro_text(since)
        while True:
            where = "org_id = %(org)s AND project_id = %(project)s"
            if since is not None:
                where += " AND start_time >= toDateTime64(%(since)s, 6, 'UTC')"
            result = store.client.query(
                f"SELECT {select} FROM {store.table('spans')} WHERE {where}{after} "
                "ORDER BY start_time, trace_id, span_id, version LIMIT %(size)s",
                parameters=params,
            )
            rows = [_row(names, r) for r in result.result_rows]
            if not rows:
                break
            yield _newest_copies(rows)
            if len(rows) < size:
                break
            last = rows[-1]
            params.update(s=micro_text(last["start_time"]), t=last["trace_id"], sp=last["span_id"])
            after = (
                " AND start_time >= toDateTime64(%(s)s, 6, 'UTC') AND (start_time, trace_id, "
                "span_id) > (toDateTime64(%(s)s, 6, 'UTC'), %(t)s, %(sp)s)"
            )


def _newest_copies(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A page's rows, the newest copy of each span alone (copies lie next to each other, the
    newest last): a span is never rewritten twice in one insert."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if out and (out[-1]["trace_id"], out[-1]["span_id"]) == (row["trace_id"], row["span_id"]):
            out[-1] = row
        else:
            out.append(row)
    return out


def day_stamps(
    store: SpanStore, org_id: int, days: list[tuple[int, date]]
) -> dict[tuple[int, date], int]:
    """The least retention stamp (above 0) of the stored spans of each of the org's (project,
    UTC day)s; a day none of whose spans is stamped is absent. One read of the days' range."""
    if not days:
        return {}
    epoch = date(1970, 1, 1)
    rows = store.client.query(
        "SELECT project_id, intDiv(toUnixTimestamp(start_time), 86400) AS day_n, "
        f"min({layout.RETAIN_DAYS}) FROM {store.table('spans')} "
        f"WHERE {_in_days('start_time')} AND {layout.RETAIN_DAYS} > 0 GROUP BY project_id, day_n",
        parameters=_days_params(org_id, days),
        settings={"max_query_size": 65_536 + 40 * len(days)},
    ).result_rows
    return {(int(p), epoch + timedelta(days=int(d))): int(n) for p, d, n in rows}


def expiring(day: date, stamp: int, now: datetime) -> bool:
    """Whether a span of `day` stamped `stamp` days may be past its retention by now (with
    `writes.EXPIRY_MARGIN`, as ingest): the day's first instant is its earliest span's."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(days=stamp) <= now + EXPIRY_MARGIN


def _day_of(row: dict[str, Any]) -> tuple[int, date]:
    return int(row["project_id"]), row["start_time"].astimezone(UTC).date()


def full_rows(
    store: SpanStore, org_id: int, project_id: int, keys: list[tuple[str, str, datetime]]
) -> list[dict[str, Any]]:
    """Every column of the spans `keys` ((trace, span, start)) names, newest copy of each."""
    if not keys:
        return []
    starts = [k[2] for k in keys]
    select = ", ".join(f"`{n}`" for n in _NAMES)
    result = store.client.query(
        f"SELECT {select} FROM {store.table('spans')} WHERE org_id = %(org)s "
        "AND project_id = %(project)s AND start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
        "AND start_time <= toDateTime64(%(hi)s, 6, 'UTC') AND (trace_id, span_id) IN %(ids)s "
        "ORDER BY version DESC LIMIT 1 BY trace_id, span_id",
        parameters={
            "org": org_id,
            "project": project_id,
            "lo": micro_text(min(starts)),
            "hi": micro_text(max(starts)),
            "ids": [(t, s) for t, s, _ in keys],
        },
        settings={"max_query_size": 65_536 + 60 * len(keys)},
    )
    return [_row(_NAMES, r) for r in result.result_rows]


def _in_days(column: str) -> str:
    """Rows of the org's (project, UTC day)s (parameters org, lo, hi: the days' extent for the
    key and partitions; days: (project, days since 1970) pairs)."""
    return (
        f"org_id = %(org)s AND {column} >= toDateTime64(%(lo)s, 6, 'UTC') "
        f"AND {column} < toDateTime64(%(hi)s, 6, 'UTC') "
        f"AND (project_id, intDiv(toUnixTimestamp({column}), 86400)) IN %(days)s"
    )


def _days_params(org_id: int, days: list[tuple[int, date]]) -> dict[str, Any]:
    epoch = date(1970, 1, 1)
    first = min(d for _, d in days)
    last = max(d for _, d in days)
    return {
        "org": org_id,
        "lo": micro_text(datetime(first.year, first.month, first.day, tzinfo=UTC)),
        "hi": micro_text(datetime(last.year, last.month, last.day, tzinfo=UTC) + _DAY),
        "days": [(p, (d - epoch).days) for p, d in days],
    }


def _days_statement(store: SpanStore) -> str:
    """The minute rows of the org's (project, day)s from their spans (`_in_days`), by the
    minute view's own expressions; the hour's and day's views fold them."""
    source = newest_spans(store, rollup_select.texts(), _in_days("start_time"))
    target = ", ".join(rollup_select.names())
    return f"INSERT INTO {store.table('rollup_1min')} ({target})\n{rollup_select.select(source)}"


def _trace_statement(store: SpanStore) -> str:
    """The trace totals of one org's project's traces from their spans (parameters org,
    project, traces, first, last), by the trace totals view's own expressions."""
    partials = layout.trace_total_partials()
    source = newest_spans(
        store,
        [p.select for p in partials] + [_counted_spans()],
        "org_id = %(org)s AND project_id = %(project)s AND trace_id IN %(traces)s "
        "AND start_time >= toDateTime64(%(first)s, 6, 'UTC') "
        "AND start_time <= toDateTime64(%(last)s, 6, 'UTC')",
    )
    keys = ["org_id", "project_id", "trace_id"]
    select = [f"spans.{k} AS {k}" for k in keys]
    select += [f"{p.select} AS {p.column.name}" for p in partials]
    target = ", ".join(keys + [p.column.name for p in partials])
    return (
        f"INSERT INTO {store.table('trace_totals')} ({target})\n"
        f"SELECT {', '.join(select)}\nFROM {source}\nWHERE {_counted_spans()}\n"
        f"GROUP BY {', '.join(keys)}"
    )


def _sync_delete(store: SpanStore, table: str, where: str, params: dict[str, Any]) -> None:
    """A lightweight DELETE waited on, so the rebuild's insert follows rows already gone."""
    store.client.command(
        f"DELETE FROM {store.table(table)} WHERE {where}",
        parameters=params,
        settings={**delete_sync(store, 2), "max_query_size": 1 << 20},
    )


def rebuild_days(store: SpanStore, org_id: int, days: list[tuple[int, date]]) -> None:
    """The org's rollup rows of its (project, UTC day)s, every grain, made again from their
    spans: one DELETE per grain, waited on, then one INSERT of the minute rows."""
    if not days:
        return
    params = _days_params(org_id, days)
    settings = {"max_query_size": 65_536 + 40 * len(days)}
    for grain in layout.GRAIN_SECONDS:
        _sync_delete(store, f"rollup_{grain}", _in_days("bucket_start"), params)
    store.client.command(_days_statement(store), parameters=params, settings=settings)


# The old copies' delete as `system.mutations` shows it (`delete_older`)
_OLDER = "position(command, 'NOT IN (SELECT trace_id, span_id, max(version)') > 0"


def delete_older(store: SpanStore, org_id: int, days: list[tuple[int, date]]) -> None:
    """Every copy of a span in the org's (project, day)s but its newest deleted: one
    lightweight DELETE, queued (`wait_deleted` waits). Copies sharing the newest version stay
    (`fold_copies.py`)."""
    if not days:
        return
    params = _days_params(org_id, days)
    where = _in_days("start_time")
    table = store.table("spans")
    store.client.command(
        f"DELETE FROM {table} WHERE {where} AND (trace_id, span_id, version) NOT IN "
        f"(SELECT trace_id, span_id, max(version) FROM {table} WHERE {where} "
        "GROUP BY trace_id, span_id)",
        parameters=params,
        settings={**delete_sync(store, 0), "max_query_size": 65_536 + 80 * len(days)},
    )


def wait_deleted(store: SpanStore, org_id: int) -> None:
    """Wait (at most `WAIT_S`) until the engine has applied `delete_older`'s deletes."""
    if not settle(store, WAIT_S, ("spans",), _OLDER):
        raise DatabaseUnavailable(
            f"The span store at {store.target.describe()} has not yet deleted the older copies "
            f"of org {org_id}'s rewritten spans after {WAIT_S:.0f} s; the engine goes on with "
            "them. Run remap again once system.mutations is empty."
        )


def rebuild_traces(
    store: SpanStore, org_id: int, project_id: int, traces: dict[str, list[datetime]]
) -> None:
    """The org's project's trace totals of `traces` (trace -> its rewritten spans' starts) made
    again from their spans, read within the traces' extent (`view_gaps._extent`)."""
    ids = sorted(traces)
    for i in range(0, len(ids), TRACES):
        chunk = ids[i : i + TRACES]
        params: dict[str, Any] = {"org": org_id, "projects": [project_id], "traces": chunk}
        starts = [s for t in chunk for s in traces[t]]
        first, last = _extent(store, params, starts)
        params = {"org": org_id, "project": project_id, "traces": chunk}
        _sync_delete(
            store,
            "trace_totals",
            "org_id = %(org)s AND project_id = %(project)s AND trace_id IN %(traces)s",
            params,
        )
        store.client.command(
            _trace_statement(store),
            parameters={**params, "first": first, "last": last},
            settings={"max_query_size": 65_536 + 40 * len(chunk)},
        )


# rows and changes read before the write turn -> those still to write, decided under it
Check = Callable[
    [list[dict[str, Any]], list[dict[str, Any]]], tuple[list[dict[str, Any]], list[dict[str, Any]]]
]


@dataclass
class Rewriter:
    """Rewrites one org's spans: `rewrite` inserts a page's new copies; `flush` rebuilds the
    (project, day)s they fall in and their traces, then deletes the old copies (see above).
    The walk calls `flush(before=(project, day))` as it leaves days behind, so each day is
    rebuilt once; more than `flush_rows` spans held flushes every day held (the walk's own day
    again at its end)."""

    store: SpanStore
    org_id: int
    turn: OrgTurns | None = None
    flush_rows: int = FLUSH_ROWS
    days: dict[tuple[int, date], int] = field(default_factory=dict)  # -> spans held
    traces: dict[int, dict[str, list[datetime]]] = field(default_factory=dict)
    rewritten: int = 0
    stamps: dict[tuple[int, date], int] = field(default_factory=dict)  # `day_stamps`, 0: none

    def unexpired(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows whose (project, UTC day) holds no span that may be past its retention
        (`day_stamps`, read once per day the walk finds a change in; forgotten once it left).
        Judged by the day, not the span: the rewrite rebuilds the whole day from its spans,
        so a live span of a day whose earlier spans the TTL already deleted would take those
        spans' rollup rows with it (the rollups outlive the spans); and a copy of a span past
        its stamp would be counted by the views and dropped by the TTL as it is written."""
        days = {_day_of(r) for r in rows}
        missing = sorted(days - self.stamps.keys())
        if missing:
            found = day_stamps(self.store, self.org_id, missing)
            self.stamps.update({d: found.get(d, 0) for d in missing})
        now = datetime.now(UTC)
        gone = {d for d in days if self.stamps[d] and expiring(d[1], self.stamps[d], now)}
        return [r for r in rows if _day_of(r) not in gone]

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """The org's write turn as ingest takes it (`writes.org_turn`): a rebuilt day under a
        pending move's negative rows would lose the wrappers' key's other spans."""
        with org_turn(self.store, self.turn, [self.org_id]):
            yield

    def hold(self, project_id: int, trace_id: str, start: datetime) -> None:
        """A span whose (project, day) and trace are to be rebuilt, and its day's older
        copies deleted, at the next flush that reaches its day."""
        day = (project_id, start.astimezone(UTC).date())
        self.days[day] = self.days.get(day, 0) + 1
        self.traces.setdefault(project_id, {}).setdefault(trace_id, []).append(start)

    def rewrite(
        self,
        rows: list[dict[str, Any]],
        changes: list[dict[str, Any]],
        check: Check | None = None,
    ) -> None:
        """Store `rows` (stored rows, every column) with `changes` as new copies (a version
        above theirs), each span keeping its retention stamp; their old copies held for the
        flush. `check(rows, changes)`, under the turn before the insert, answers those still
        to write (what was read before the turn may have changed since)."""
        if not rows:
            return
        if sum(self.days.values()) + len(rows) > self.flush_rows:
            self.flush()
        with self._turn():
            if check is not None:
                rows, changes = check(rows, changes)
            if rows:
                self._insert(rows, changes)
        for row in rows:
            self.hold(row["project_id"], row["trace_id"], row["start_time"])
        self.rewritten += len(rows)

    def _insert(self, rows: list[dict[str, Any]], changes: list[dict[str, Any]]) -> None:
        """The new copies' insert (under the turn)."""
        new = []
        for row, change in zip(rows, changes, strict=True):
            merged = {**row, **change}
            for name, text in row.get(_RAW, {}).items():  # unchanged JSON: its stored text
                if name not in change:
                    merged[name] = JsonText(text)
            new.append(merged)
        store = self.store
        version = max(max(int(r["version"]) for r in rows) + 1, time.time_ns() // 1000)
        columns = as_columns(new, _NAMES, version, lambda _org, _project: 0)
        columns[_NAMES.index(layout.RETAIN_DAYS)] = [int(r[layout.RETAIN_DAYS]) for r in rows]
        store.client.insert(
            store.table("spans"), columns, column_names=list(_NAMES), column_oriented=True
        )

    def flush(self, before: tuple[int, date] | None = None) -> None:
        """The held (project, day)s (those before `before` only, when given: the walk goes
        project by project, day by day) and every held trace rebuilt, and those days' older
        copies deleted. The traces first (from the newest copies, so a trace with a day still
        held is right now, and rebuilt again with that day; a run stopped after them leaves
        the copies the next run settles), under the org's write turn for every `TRACES`
        traces; then for every `DAYS` days one turn holds their rebuild and their older
        copies' delete until it is applied: a writer reading the older copies (a wrapper still
        flagged there) against the rebuilt rows would move it out of them a second time."""
        if before is not None:  # the walk has left these days (`unexpired`)
            self.stamps = {d: n for d, n in self.stamps.items() if d >= before}
        days = sorted(d for d in self.days if before is None or d < before)
        if not days:
            return
        store = self.store
        for project_id, traces in sorted(self.traces.items()):
            ids = sorted(traces)
            for i in range(0, len(ids), TRACES):
                with self._turn():
                    chunk = {t: traces[t] for t in ids[i : i + TRACES]}
                    rebuild_traces(store, self.org_id, project_id, chunk)
        for i in range(0, len(days), DAYS):  # each turn held for a few days alone
            with self._turn():
                rebuild_days(store, self.org_id, days[i : i + DAYS])
                delete_older(store, self.org_id, days[i : i + DAYS])
                wait_deleted(store, self.org_id)
        for d in days:
            del self.days[d]
        self.traces = {}


def leftover_copies(store: SpanStore, org_id: int) -> list[tuple]:
    """The org's older copies a rewrite stopped before its flush left (or racing writers:
    `fold_copies.py`): (trace, span, version, start). The org's range of the table alone is
    grouped, and only its copies held."""
    return [
        (trace_id, span_id, version, _utc(start))
        for _org, trace_id, span_id, version, start in _older_copies(store, [org_id])
        if version is not None
    ]


def settle_copies(rewriter: Rewriter, copies: list[tuple]) -> None:
    """Older copies a stopped run left: their days and traces rebuilt, then deleted. Their
    projects are read `TRACES` copies at a time, in start order, each read bounded by its
    copies' first and last start (the table's key), not the org's whole history."""
    store = rewriter.store
    copies = sorted(copies, key=lambda c: c[3])
    for i in range(0, len(copies), TRACES):
        chunk = copies[i : i + TRACES]
        rows = store.client.query(
            f"SELECT DISTINCT project_id, trace_id, start_time FROM {store.table('spans')} "
            "WHERE org_id = %(org)s AND start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
            "AND start_time <= toDateTime64(%(hi)s, 6, 'UTC') AND (trace_id, span_id) IN %(ids)s",
            parameters={
                "org": rewriter.org_id,
                "lo": micro_text(chunk[0][3]),
                "hi": micro_text(chunk[-1][3]),
                "ids": [(t, s) for t, s, _, _ in chunk],
            },
            settings={"max_query_size": 65_536 + 60 * len(chunk)},
        ).result_rows
        for project_id, trace_id, start in rows:
            rewriter.hold(int(project_id), trace_id, _utc(start))
    rewriter.flush()
