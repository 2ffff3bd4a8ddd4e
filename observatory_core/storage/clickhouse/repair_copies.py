"""Spans stored more than once, found and put right (`clickhouse-repair-copies`; docs/scale.md,
"Each span once").

Writers that raced before the write turns, or `writes.write_spans` called without `turn`, left
copies of some spans: reads pick each span's newest copy (`ORDER BY version DESC LIMIT 1 BY
org_id, trace_id, span_id`, `stores/clickhouse.py`), but a copy with another start is listed
twice in spans mode, and the views counted every copy in the rollups and trace totals (and its
user and session in the hours' actors). This finds them per org, one month partition at a
time (the spans with a copy starting in that month, their copies wherever they start), and
keeps only the copy reads pick: the one with the highest `version`.

Per group of spans, under the org's write turn: the rollup rows (every grain) of the buckets
any of their copies fall in, the trace totals of their traces and the actors of their hours
are deleted; then `view_gaps.fill_gaps` fills them again from the org's spans without the older
copies (a derived table that leaves them out); then, once every grain's buckets are whole,
the older copies are deleted. The copies go last, so a run stopped anywhere finds the same
spans again and does the same again: it ends right when run again. Deletions are lightweight
(`DELETE FROM`: rows masked at once, no view runs, no part rewritten but for its mask);
see docs/scale.md for why not a mutation or a partition swapped in.

A span whose newest copies tie on `version` (written in the same microsecond) has no copy
reads pick for certain: it is reported and left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from clickhouse_connect.driver.binding import format_query_value

from observatory_core.base.errors import ConfigError
from observatory_core.storage.clickhouse import layout, view_gaps
from observatory_core.storage.clickhouse.cluster import delete_sync
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.ddl import ACTORS, _next_month, months
from observatory_core.storage.clickhouse.layout import micro_text
from observatory_core.storage.clickhouse.org_turns import OrgTurns, own_process

# spans repaired per round: bounds the older copies' list written into each statement
CHUNK = 1_000
# a delete answers once its rows are gone on every replica (the server's default; said here
# so a server set otherwise cannot let the fill read rows about to be deleted), by the setting
# the server knows (`cluster.delete_sync`)
_DELETED_BEFORE_ANSWER = 2
_HOUR = layout.GRAIN_SECONDS["1hour"]


class Copied(NamedTuple):
    """A span stored more than once: each copy's (version, start, project)."""

    trace_id: str
    span_id: str
    copies: tuple[tuple[int, datetime, int], ...]

    def newest(self) -> int:
        return max(v for v, _, _ in self.copies)

    def tied(self) -> bool:
        """Two copies hold the newest version: which one reads pick is not fixed."""
        return sum(v == self.newest() for v, _, _ in self.copies) > 1

    def older(self) -> list[tuple[str, str, int]]:
        return sorted(
            {(self.trace_id, self.span_id, v) for v, _, _ in self.copies if v < self.newest()}
        )


@dataclass
class MonthResult:
    org_id: int
    month: datetime
    spans: int = 0  # spans with a copy starting this month, stored more than once
    copies: int = 0  # older copies (deleted, unless only checked)
    hours: list[datetime] = field(default_factory=list)  # hours their copies start in
    tied: int = 0  # spans left: their newest copies tie
    waited: bool = False  # left for a later run: spans written within `view_gaps.SETTLE`
    # the spans, (trace, span) -> their older copies (a span with copies in two months is
    # found in both when only checked)
    keys: dict[tuple[str, str], int] = field(default_factory=dict)
    repaired: int = 0  # spans left with their newest copy alone


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def find_copies(store: SpanStore, org_id: int, month: datetime) -> list[Copied]:
    """The org's spans with a copy starting in `month` and more than one copy (anywhere):
    the month's identities are the set (bounded by the month's spans), the org's copies are
    read against it."""
    spans = store.table("spans")
    result = store.client.query(
        "SELECT trace_id, span_id, groupArray((version, start_time, project_id)) "
        f"FROM {spans} WHERE org_id = %(org)s AND (trace_id, span_id) IN ("
        f"SELECT trace_id, span_id FROM {spans} WHERE org_id = %(org)s "
        "AND start_time >= toDateTime64(%(start)s, 6, 'UTC') "
        "AND start_time < toDateTime64(%(end)s, 6, 'UTC')) "
        "GROUP BY trace_id, span_id HAVING count() > 1 ORDER BY trace_id, span_id",
        parameters={
            "org": org_id,
            "start": micro_text(month),
            "end": micro_text(_next_month(month)),
        },
    )
    return [
        Copied(t, s, tuple(sorted((int(v), _utc(st), int(p)) for v, st, p in copies)))
        for t, s, copies in result.result_rows
    ]


def _in_list(values: Iterable[tuple]) -> str:
    return "(" + ", ".join(format_query_value(v) for v in values) + ")"


def _young(store: SpanStore, org_id: int, group: list[Copied]) -> bool:
    """Whether a span of the group's days or traces was written within `SETTLE`, or an insert
    into the spans is running: its views may not have run yet (`view_gaps.py`)."""
    if view_gaps._insert_running(store):
        return True
    starts = [st for c in group for _, st, _ in c.copies]
    lo = datetime(*min(starts).timetuple()[:3], tzinfo=UTC)
    hi = datetime(*max(starts).timetuple()[:3], tzinfo=UTC) + timedelta(days=1)
    traces = sorted({c.trace_id for c in group})
    ((young,),) = store.client.query(
        f"SELECT count() FROM {store.table('spans')} WHERE org_id = %(org)s "
        "AND version >= %(settled)s AND ((start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
        "AND start_time < toDateTime64(%(hi)s, 6, 'UTC')) OR trace_id IN %(traces)s)",
        parameters={
            "org": org_id,
            "settled": view_gaps._young(0)["settled"],
            "lo": micro_text(lo),
            "hi": micro_text(hi),
            "traces": traces,
        },
        settings={"max_query_size": 65536 + 80 * len(traces)},
    ).result_rows
    return young > 0


class NotFilled(Exception):
    """A grain's buckets still short after the fill: the copies are kept for a later run."""


def _repair(store: SpanStore, org_id: int, group: list[Copied]) -> None:
    """Delete the group's views' rows, fill them again without the older copies, then delete
    those copies (see above). `NotFilled` when a grain's buckets are still short after the
    fill (an insert began meanwhile, say), so the copies stay for a later run."""
    client = store.client
    older = [key for c in group for key in c.older()]
    listed = _in_list(older)
    room = {"max_query_size": 65536 + len(listed) + 80 * len(group)}
    starts = [st for c in group for _, st, _ in c.copies]
    traces = sorted({c.trace_id for c in group})
    org = {"org": org_id}
    ((first, last),) = client.query(
        f"SELECT min(first_start), max(last_start) FROM {store.table('trace_totals')} "
        "WHERE org_id = %(org)s AND trace_id IN %(traces)s",
        parameters={**org, "traces": traces},
        settings=room,
    ).result_rows
    extent = tuple(_utc(t) for t in (first, last) if t is not None and t.year > 1970)
    day = layout.GRAIN_SECONDS["1day"]
    lo = micro_text(datetime.fromtimestamp(min(_e(s) for s in starts) // day * day, UTC))
    hi = micro_text(datetime.fromtimestamp(max(_e(s) for s in starts) // day * day + day, UTC))
    for grain, seconds in layout.GRAIN_SECONDS.items():
        client.command(
            f"DELETE FROM {store.table(f'rollup_{grain}')} WHERE org_id = %(org)s "
            "AND bucket_start >= toDateTime64(%(lo)s, 6, 'UTC') "
            "AND bucket_start < toDateTime64(%(hi)s, 6, 'UTC') "
            "AND toUnixTimestamp(bucket_start) IN %(buckets)s",
            parameters={**org, "lo": lo, "hi": hi, "buckets": _buckets(starts, seconds)},
            settings={**room, **delete_sync(store, _DELETED_BEFORE_ANSWER)},
        )
    # the (project, trace) rows the fill covers: the copies' projects (a trace's rows in its
    # other projects hold no copy and are left as they are)
    projects = sorted({p for c in group for _, _, p in c.copies})
    client.command(
        f"DELETE FROM {store.table('trace_totals')} WHERE org_id = %(org)s "
        "AND project_id IN %(projects)s AND trace_id IN %(traces)s",
        parameters={**org, "projects": projects, "traces": traces},
        settings={**room, **delete_sync(store, _DELETED_BEFORE_ANSWER)},
    )
    client.command(
        f"DELETE FROM {store.table(ACTORS)} WHERE org_id = %(org)s "
        "AND bucket_start >= toDateTime64(%(lo)s, 6, 'UTC') "
        "AND bucket_start < toDateTime64(%(hi)s, 6, 'UTC') "
        "AND toUnixTimestamp(bucket_start) IN %(hours)s",
        parameters={**org, "lo": lo, "hi": hi, "hours": _buckets(starts, _HOUR)},
        settings={**room, **delete_sync(store, _DELETED_BEFORE_ANSWER)},
    )
    # the org's spans as they will be once the older copies are gone
    source = (
        f"(SELECT * FROM {store.table('spans')} WHERE org_id = {int(org_id)} "
        f"AND (trace_id, span_id, version) NOT IN {listed})"
    )
    found = [(p, c.trace_id, st) for c in group for _, st, p in c.copies]
    view_gaps.fill_gaps(store, org_id, found, spans=source, extent=extent or None)
    days = _buckets(starts, day)
    for grain in layout.GRAIN_SECONDS:
        if view_gaps._short(store, grain, org_id, days, lo, hi, 0, source):
            raise NotFilled(grain)
    client.command(
        f"DELETE FROM {store.table('spans')} WHERE org_id = %(org)s "
        f"AND (trace_id, span_id, version) IN {listed}",
        parameters=org,
        settings={**room, **delete_sync(store, _DELETED_BEFORE_ANSWER)},
    )


def _e(value: datetime) -> int:
    return int(_utc(value).timestamp())


def _buckets(starts: list[datetime], seconds: int) -> list[int]:
    return sorted({_e(s) // seconds * seconds for s in starts})


def repair_month(
    store: SpanStore,
    org_id: int,
    month: datetime,
    *,
    check: bool = False,
    turn: OrgTurns | None = None,
) -> MonthResult:
    """Find (and unless `check`, repair) the org's spans with a copy starting in `month`.
    The search and each group's repair run under the org's write turn, taken again for each
    group, so the org's ingest waits for one group (seconds), not for the month's."""
    with store.write_lock, (turn or own_process)([org_id]):
        found = find_copies(store, org_id, month)
    result = MonthResult(org_id, month, spans=len(found))
    result.keys = {(c.trace_id, c.span_id): len(c.older()) for c in found}
    result.copies = sum(len(c.older()) for c in found)
    hours = {_e(st) // _HOUR * _HOUR for c in found for _, st, _ in c.copies}
    result.hours = [datetime.fromtimestamp(h, UTC) for h in sorted(hours)]
    result.tied = sum(c.tied() for c in found)
    fixable = [c for c in found if not c.tied()]
    if check:
        return result
    for i in range(0, len(fixable), CHUNK):
        group = fixable[i : i + CHUNK]
        # a group found before another group's turn: its copies may have changed since (a
        # writer without the turn, another run); the repair reads the spans as they are, and
        # deleting copies already gone, or leaving a new one for the next run, is still right
        with store.write_lock, (turn or own_process)([org_id]):
            if _young(store, org_id, group):
                result.waited = True
                continue
            try:
                _repair(store, org_id, group)
            except NotFilled:
                result.waited = True
            else:
                result.repaired += len(group)
    return result


def store_months(store: SpanStore) -> list[datetime]:
    """The months the store's spans start in (from the parts' min/max index)."""
    return months(store)


def store_orgs(store: SpanStore) -> list[int]:
    result = store.client.query(f"SELECT DISTINCT org_id FROM {store.table('spans')} ORDER BY 1")
    return [int(o) for (o,) in result.result_rows]


def repair_copies(
    store: SpanStore,
    org_ids: list[int],
    *,
    check: bool = False,
    turn: OrgTurns | None = None,
    on_month: Callable[[MonthResult], None] | None = None,
) -> list[MonthResult]:
    """Every org's months in turn (`repair_month`); `on_month` after each. Not on a cluster
    (`view_gaps.fill_gaps` does not run there): a `ConfigError`."""
    if store.naming.cluster:
        raise ConfigError(
            "clickhouse-repair-copies does not run on a cluster yet: the rollups cannot be "
            "filled again there (docs/scale.md, 'Not yet')."
        )
    out = []
    for month in store_months(store):
        for org_id in org_ids:
            result = repair_month(store, org_id, month, check=check, turn=turn)
            out.append(result)
            if on_month is not None:
                on_month(result)
    return out
