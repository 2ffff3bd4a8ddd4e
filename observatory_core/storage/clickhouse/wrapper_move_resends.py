"""A move's insert sent again (`wrapper_moves.py`, docs/span-store-internals.md, "Wrapper moves
and their journal"): the insert sent last, not known to have landed, judged by what the rows it
goes to count now against what they counted just before it was sent (journaled then: nothing of
the org is written between, its write turn takes the move in first).

A rollup grain's insert is judged by each (bucket, key)'s span count; the trace totals' by
each (project, trace)'s span count and cost (a trace's row changes one or the other: a twin set
aside, a cost taken).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.clickhouse import view_gaps
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.wrapper_move_journal import Entry, Group
from observatory_core.storage.clickhouse.wrapper_move_reads import _key_names, _utc

log = logging.getLogger("observatory.span_store")

_WRAP = 2**64
TRACES = "trace_totals"  # the target of a move's trace totals' insert (else a rollup grain)


def table_of(target: str) -> str:
    return TRACES if target == TRACES else f"rollup_{target}"


def groups_of(target: str, rows: list[dict[str, Any]]) -> dict[Group, list[dict[str, Any]]]:
    """An insert's rows by (bucket, key), or by (project, (trace,)) for the trace totals: a
    group's rows land in one part, together or not at all."""
    out: dict[Group, list[dict[str, Any]]] = {}
    for row in rows:
        if target == TRACES:
            group: Group = (row["project_id"], (row["trace_id"],))
        else:
            group = (_utc(row["bucket_start"]), tuple(row[n] for n in _key_names()))
        out.setdefault(group, []).append(row)
    return out


def counts(store: SpanStore, org_id: int, target: str, rows: list[dict[str, Any]]) -> dict:
    """What each group `rows` go to holds now: the span count (wrapping, as the engine's UInt64
    sums) of a rollup key; [span count, cost] of a trace."""
    groups = groups_of(target, rows)
    if target == TRACES:
        result = store.client.query(
            f"SELECT project_id, trace_id, sum(span_count), sum(total_cost_usd) "
            f"FROM {store.table(TRACES)} WHERE org_id = %(org)s "
            "AND (project_id, trace_id) IN %(keys)s GROUP BY project_id, trace_id",
            parameters={"org": org_id, "keys": sorted((p, k[0]) for p, k in groups)},
        )
        found = {(p, (t,)): [int(n), float(c)] for p, t, n, c in result.result_rows}
        return {group: found.get(group, [0, 0.0]) for group in groups}
    names = _key_names()
    result = store.client.query(
        f"SELECT bucket_start, {', '.join(names)}, sum(span_count) "
        f"FROM {store.table(table_of(target))} WHERE org_id = %(org)s "
        "AND toUnixTimestamp(bucket_start) IN %(buckets)s "
        f"GROUP BY bucket_start, {', '.join(names)}",
        parameters={"org": org_id, "buckets": sorted({int(b.timestamp()) for b, _ in groups})},
    )
    found = {(_utc(b), tuple(key)): int(n) for b, *key, n in result.result_rows}
    return {group: found.get(group, 0) for group in groups}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return a[0] % _WRAP == b[0] % _WRAP and math.isclose(a[1], b[1], abs_tol=1e-9)
    return a % _WRAP == b % _WRAP


def _added(before: Any, members: list[dict[str, Any]]) -> Any:
    n = sum(int(r["span_count"]) for r in members)
    if isinstance(before, list):
        return [before[0] + n, before[1] + sum(r["total_cost_usd"] for r in members)]
    return before + n


def none_running(store: SpanStore, entry: Entry) -> None:
    """The insert of `entry.sending` may still be running on a server whose client gave up (a
    lock wait past `send_receive_timeout`; the writer's turn let go as it raised): judged by
    its counts before it lands, it would be sent again and land twice. Refused while the
    server lists an insert into that table (anyone's: a retry costs less than a guess), as
    `view_gaps.fill_gaps` waits for the spans' inserts."""
    assert entry.sending is not None
    table = table_of(entry.sending)
    if view_gaps.insert_running(store, table):
        raise DatabaseUnavailable(
            f"The span store is still running an insert into {table} (system.processes): "
            f"org {entry.org_id}'s pending move of stored spans' figures, whose last "
            "insert there is not known to have landed, waits for it; retry."
        )


def resend(
    store: SpanStore,
    entry: Entry,
    rows: list[dict[str, Any]],
    insert: Callable[[SpanStore, list[dict[str, Any]], str], None],
) -> None:
    """The insert of `entry.sending` failed or was not journaled as landed: each group of it
    holds what it held just before (`entry.before`), and is sent again, or that and its rows'
    more, and has landed. A group holding neither (the retention deleted its bucket
    meanwhile) is left, logged."""
    target = entry.sending
    assert target is not None
    now = counts(store, entry.org_id, target, rows)
    again = []
    for group, members in groups_of(target, rows).items():
        before = entry.before.get(group, [0, 0.0] if target == TRACES else 0)
        if _same(now[group], before):
            again += members
        elif not _same(now[group], _added(before, members)):
            log.warning(
                "Span store: org %s's %s rows of %s hold %s, neither the %s before the move's "
                "insert nor its rows more: not sent again.",
                entry.org_id,
                table_of(target),
                group,
                now[group],
                before,
            )
    if again:
        insert(store, again, table_of(target))
    entry.landed.append(target)
    entry.sending, entry.before = None, {}
