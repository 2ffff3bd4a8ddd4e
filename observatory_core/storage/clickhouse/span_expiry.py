"""The span store's spans and trace totals past their retention, counted per org and deleted by
the worker's retention run, so the org's audit trail says what it lost as on the other stores
(docs/span-store-internals.md, "Retention").

The tables' TTLs (`ddl._spans`, `layout.trace_totals_ttl`) stay as the backstop; the run
deletes the same rows first, by the same expressions, because a TTL deletes in the engine's
merges (every `merge_with_ttl_timeout`, four hours by default) and tells no one what went. A
run counts the rows whose stamp has run out, then sends one lightweight DELETE per table of the
same rows (not waited on, as the rollups' deletes: `rollup_retention.py`), and skips a table
while an earlier mutation of it (a re-stamp, the last run's delete) is unfinished, so a delete
never judges rows by stamps a re-stamp is changing (the worker's run calls it only when its
re-stamp found every stamp current: `runtime/retention._spans`). Rows a TTL merge removed before a run are
in no count: with the run more often than the TTL's merges, few.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from observatory_core.storage.clickhouse.cluster import QUEUED_SETTINGS, READ_SETTINGS, delete_sync
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.layout import MAX_TTL_DAYS, RETAIN_DAYS, micro_text
from observatory_core.storage.clickhouse.restamp import pending, store_errors


@dataclass(frozen=True)
class Expired:
    """What one org lost in a run: spans, traces (every totals row of the trace gone) and the
    trace totals' rows (a trace's partial rows, one per project and insert until merged)."""

    spans: int = 0
    traces: int = 0
    trace_rows: int = 0


def _gone(start: str, now: datetime) -> str:
    """Rows whose stamp has run out at `now`: the TTL's own expression on the stamps it acts
    on (1 to `MAX_TTL_DAYS`; 0 and the forever stamp are kept), and the start a day or more
    before `now`, which the partitions' time bounds can use."""
    at = f"toDateTime64('{micro_text(now)}', 6, 'UTC')"
    return (
        f"{RETAIN_DAYS} BETWEEN 1 AND {MAX_TTL_DAYS} AND {start} <= {at} - INTERVAL 1 DAY "
        f"AND toDateTime({start}) + toIntervalDay({RETAIN_DAYS}) <= {at}"
    )


def expire_spans(
    store: SpanStore, now: datetime, deleted: Callable[[dict[int, Expired]], None]
) -> None:
    """Delete the spans and trace totals rows past their stamped retention, telling `deleted`
    what each org lost as soon as each table's DELETE is sent (a failure after it keeps the
    count). Raises `DatabaseUnavailable` on a store failure (said by the worker's run)."""
    span_going, going = _gone("start_time", now), _gone("last_start", now)
    with store_errors(store):
        # every count read before any DELETE is sent: a read failing after a DELETE went would
        # leave rows deleted whose count reaches no audit trail
        spans = _counted(store, "spans", span_going)
        rows = _counted(store, "trace_totals", going)
        traces = _whole_traces(store, going) if rows else {}
        if spans:
            _delete(store, "spans", span_going)
            deleted({o: Expired(spans=n) for o, n in spans.items()})
        if rows:
            _delete(store, "trace_totals", going)
            deleted({o: Expired(traces=traces.get(o, 0), trace_rows=n) for o, n in rows.items()})


def _counted(store: SpanStore, table: str, where: str) -> dict[int, int]:
    """`table`'s rows `where` picks, per org; none while a mutation of the table is unfinished
    (the next run goes on)."""
    if pending(store, (table,)):
        return {}
    rows = store.client.query(
        f"SELECT org_id, count() FROM {store.table(table)} WHERE {where} GROUP BY org_id"
    ).result_rows
    return {int(o): int(n) for o, n in rows}


def _delete(store: SpanStore, table: str, where: str) -> None:
    naming = store.naming
    store.client.command(
        f"DELETE FROM {naming.stored(table)}{naming.on} WHERE {where}",
        settings={**delete_sync(store, 0), **naming.settings(QUEUED_SETTINGS)},
    )


def _whole_traces(store: SpanStore, going: str) -> dict[int, int]:
    """Per org, the traces whose every totals row (any project's) is going, counted before
    the delete is sent."""
    table = store.table("trace_totals")
    rows = store.client.query(
        f"SELECT org_id, countIf(every) FROM (SELECT org_id, trace_id, min({going}) AS every "
        f"FROM {table} WHERE (org_id, trace_id) IN (SELECT org_id, trace_id FROM {table} "
        f"WHERE {going}) GROUP BY org_id, trace_id) GROUP BY org_id",
        # on a cluster the IN's subquery reads the Distributed table too, refused without it
        settings=store.naming.settings(READ_SETTINGS),
    ).result_rows
    return {int(o): int(n) for o, n in rows}
