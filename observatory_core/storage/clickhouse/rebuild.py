"""The rollups' latency bins for rows written before schema version 3 (`clickhouse-rebuild-
rollups`; docs/span-store-internals.md, "Metrics on rollups").

A minute rollup row whose bins hold fewer spans than its latency count lacks the bins of the
spans the views folded before version 3. For each such row, the bins of its spans (the newest
copy of each, counted as the views count them, grouped by the views' own expressions) less the
bins it holds are inserted as a row of the same key with every count and sum zero: the
AggregatingMergeTree adds it to the row, and the hour's and day's views fold it into theirs as
they fold any minute row. A row complete afterwards is never selected again, so the command is
resumable: stopped, it goes on where the rows still lack bins; run twice, it changes nothing.
It works one org's day at a time (a day of spans read once, its minute rows grouped once).

A row is left as it is when its spans' bins do not cover the bins it holds (a span counted
twice by racing writers, or deleted since): the metrics leave its percentiles empty
(`metrics/series_reads.py`, `without_partial_bins`); its counts and sums stand.

On a cluster the rows are inserted into the connected node's `rollup_1min_local` (the
Distributed `rollup_1min` has no sharding key to place them by), computed from every shard's
spans and rows: a read sums a key's rows over the shards, so the bins add up wherever they lie.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from observatory_core.semantic.metrics import sketched
from observatory_core.storage.clickhouse import layout, rollup_select
from observatory_core.storage.clickhouse.cluster import READ_SETTINGS
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.org_turns import OrgTurns, own_process


@dataclass
class RebuildReport:
    days: int = 0  # org-days that held rows without (all their) bins, each rebuilt
    left: int = 0  # org-days still without them after (rows whose spans do not cover them)


def _count_column() -> str:
    return f"{sketched().rollup.column}_count"


def days_missing_bins(store: SpanStore) -> list[tuple[int, date]]:
    """(org, day) whose minute rollup rows count more latencies than their bins hold."""
    result = store.client.query(
        f"SELECT org_id, toDate(bucket_start) AS day FROM {store.table('rollup_1min')} "
        f"GROUP BY org_id, day HAVING arraySum(mapValues(sumMap({layout.BINS_COLUMN}))) "
        f"< sum({_count_column()}) ORDER BY org_id, day"
    )
    return [(int(org), day) for org, day in result.result_rows]


def _span_columns() -> list[str]:
    """The span columns the minute view reads (and the identity, time and version)."""
    named = rollup_select.columns_read((layout.bins_partial(),))
    named |= {"org_id", "trace_id", "span_id", "start_time", "version"}
    return sorted(named)


def _statement(store: SpanStore) -> str:
    """The insert for one org's day (parameters org, start, end)."""
    names = [c.name for c, _ in layout.rollup_keys()]
    bins = layout.BINS_COLUMN
    columns = ", ".join(f"`{c}`" for c in _span_columns())
    spans_of_day = (
        f"SELECT {columns} FROM {store.table('spans')} WHERE org_id = %(org)s "
        "AND start_time >= %(start)s AND start_time < %(end)s "
        "ORDER BY version DESC LIMIT 1 BY org_id, trace_id, span_id"
    )
    made = rollup_select.select(f"({spans_of_day}) AS spans", of=(layout.bins_partial(),))
    group = ", ".join(["org_id", "bucket_start", *names])
    on = " AND ".join(f"s.{n} = r.{n}" for n in ["org_id", "bucket_start", *names])
    # on a cluster, into this node's shard: what a row lacks is computed over every shard
    # (the Distributed tables), and reads add the shards' rows up
    return (
        f"INSERT INTO {store.naming.stored('rollup_1min')} (org_id, bucket_start, "
        f"{', '.join(names)}, {bins})\n"
        f"SELECT s.org_id, s.bucket_start, {', '.join('s.' + n for n in names)}, "
        f"mapSubtract(s.{bins}, r.have)\n"
        f"FROM (\n{made}\n) AS s\n"
        f"INNER JOIN (\n    SELECT {group}, sumMap({bins}) AS have, "
        f"sum({_count_column()}) AS wanted\n    FROM {store.table('rollup_1min')}\n"
        "    WHERE org_id = %(org)s AND bucket_start >= %(start)s AND bucket_start < %(end)s\n"
        f"    GROUP BY {group}\n    HAVING arraySum(mapValues(have)) < wanted\n) AS r ON {on}\n"
        # only what the row lacks, and only when its spans cover what it holds
        f"WHERE arrayAll(k -> s.{bins}[k] >= r.have[k], mapKeys(r.have))\n"
        f"  AND arraySum(mapValues(s.{bins})) = r.wanted"
    )


def rebuild_bins(
    store: SpanStore,
    *,
    on_day: Callable[[int, date], None] | None = None,
    turn: OrgTurns | None = None,
) -> RebuildReport:
    """Give every minute rollup row the bins it lacks, one org's day at a time (see above);
    `on_day(org, day)` after each. Each day is done under its org's write turn (`turn`,
    `org_turns.py`; this process's lock without it): the bins it computes from the spans must
    not interleave with a writer's insert or its top-up (`view_gaps.py`) of the same rows."""
    report = RebuildReport()
    statement = _statement(store)
    for org, day in days_missing_bins(store):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        params = {"org": org, "start": start, "end": start + timedelta(days=1)}
        with store.write_lock, (turn or own_process)([org]):
            store.client.command(
                statement, parameters=params, settings=store.naming.settings(READ_SETTINGS)
            )
        report.days += 1
        if on_day is not None:
            on_day(org, day)
    report.left = len(days_missing_bins(store))
    return report


def rebuild_actors(
    store: SpanStore,
    *,
    turn: OrgTurns | None = None,
) -> int:
    """`rollup_actors_1hour` (schema version 5) filled again from the stored spans, one org's
    day at a time under its write turn: for an insert its view missed (a view failed part-way,
    an insert running while version 5 was applied). The table is a set, so rows it holds
    already change no count. Answers the org-days read."""
    from observatory_core.storage.clickhouse.ddl import ACTORS, actors_select

    source = store.naming.read("spans") if store.naming.cluster else store.table("spans")
    days = store.client.query(
        f"SELECT DISTINCT org_id, toDate(start_time) AS day FROM {source} ORDER BY org_id, day"
    ).result_rows
    where = " AND spans.org_id = %(org)s AND spans.start_time >= %(start)s "
    where += "AND spans.start_time < %(end)s"
    statement = f"INSERT INTO {store.naming.stored(ACTORS)}\n{actors_select(source, where)}"
    for org, day in days:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        params = {"org": int(org), "start": start, "end": start + timedelta(days=1)}
        with store.write_lock, (turn or own_process)([int(org)]):
            store.client.command(statement, parameters=params)
    return len(days)
