"""Each span stored once: older copies of a span deleted (docs/span-store-internals.md, "Each span
once").

The writers store only new spans under each org's write turn (`writes.py`), so a span has one
row, and the reads take the rows as they are, with no newest-copy pick (`LIMIT 1 BY`) over the
window before a page. What can still hold a second row of a span: stores written by writers
that raced before the write turns existed (schema version 7 folds them at open), and a
cluster whose replica failed between a batch's check and its insert. `fold_copies` finds every
span with more than one row and deletes all but the newest (the largest `version`), one
lightweight DELETE per org, narrowed by the copies' start times, then waits (at most
`WAIT_S`) until the engine has applied them, so the reads that follow see one row; a delete
not applied by then is said as `DatabaseUnavailable` (the engine goes on with it, and a
later fold finds what is left). Copies that share the newest version cannot be told apart by the
statement and are left (counted in the answer); the writer stamps each insert with its own
microsecond, so only two writers' inserts in the same microsecond make them.

The rollups and trace totals, which counted each copy as it was inserted, are not changed
here: such a span still counts twice there (docs/scale.md, "Known gaps").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.cluster import QUEUED_SETTINGS, delete_sync
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.layout import micro_text
from observatory_core.storage.clickhouse.restamp import settle

# Copies deleted per statement: about 80 bytes of text each, well under the server's default
# `max_query_size` (262,144 bytes).
CHUNK = 2_000
SPILL = 512 * 1024**2  # a grouping past this many bytes spills to disk
WAIT_S = 120.0  # how long a fold waits for the engine to apply its deletes
# A fold's own deletes as `system.mutations` shows them, told apart from a re-stamp or another
# delete by the identity tuple only the fold's statement holds (not by how the engine writes a
# lightweight DELETE there, which releases word differently).
_OWN = "position(command, '(trace_id, span_id, version) IN') > 0"


@dataclass
class Folded:
    """What a fold found and did: older copies deleted per org, and spans whose newest copies
    share a version (left as they are)."""

    deleted: dict[int, int] = field(default_factory=dict)
    tied: int = 0


def _older_copies(store: SpanStore, org_ids: list[int] | None = None) -> list[tuple]:
    """(org, trace, span, version, start) of each copy older than its span's newest, and
    (org, trace, span, None, None) for a span whose newest version is held by two copies; of
    the orgs `org_ids` alone when given (their range of the table's key read, not the whole
    table: remap settles one org's copies at a time). Two reads of the table: the candidates
    by a 64-bit hash of the identity per org (a small key; grouping past `SPILL` goes to
    disk), then the exact grouping of their rows alone, so a hash collision is only a
    candidate. Splitting the table by a hash of the trace id read the whole table once per
    piece (rows squared, found in review)."""
    spans = store.table("spans")
    identity = "cityHash64(trace_id, span_id)"
    scope = "org_id IN %(orgs)s" if org_ids is not None else ""
    rows = store.client.query(
        "SELECT org_id, trace_id, span_id, arrayFilter(c -> c.1 < newest, copies), "
        "countEqual(copies.1, newest) FROM ("
        f"SELECT org_id, trace_id, span_id, groupArray(({layout.VERSION}, start_time)) AS "
        f"copies, max({layout.VERSION}) AS newest FROM {spans} "
        f"WHERE {scope + ' AND ' if scope else ''}(org_id, {identity}) IN "
        f"(SELECT org_id, {identity} AS h FROM {spans} {'WHERE ' + scope if scope else ''} "
        "GROUP BY org_id, h HAVING count() > 1) "
        "GROUP BY org_id, trace_id, span_id HAVING count() > 1)",
        parameters={"orgs": sorted(org_ids)} if org_ids is not None else None,
        settings={"max_bytes_before_external_group_by": SPILL},
    ).result_rows
    out: list[tuple] = []
    for org_id, trace_id, span_id, older, newest_copies in rows:
        out += [(int(org_id), trace_id, span_id, int(v), start) for v, start in older]
        if newest_copies > 1:
            out.append((int(org_id), trace_id, span_id, None, None))
    return out


def _delete(store: SpanStore, org_id: int, copies: list[tuple[str, str, int, datetime]]) -> None:
    """One org's older copies deleted, the statement narrowed to their start times (the
    table's key) so the engine reads only the parts that may hold them; queued, not waited
    on here (`fold_copies` waits for them all once)."""
    naming = store.naming
    for i in range(0, len(copies), CHUNK):
        chunk = copies[i : i + CHUNK]
        starts = [c[3] if c[3].tzinfo else c[3].replace(tzinfo=UTC) for c in chunk]
        low, high = min(starts), max(starts)
        tuples = ", ".join(f"('{_id(t)}', '{_id(s)}', {int(v)})" for t, s, v, _ in chunk)
        store.client.command(
            f"DELETE FROM {naming.stored('spans')}{naming.on} WHERE org_id = {int(org_id)} "
            f"AND start_time >= toDateTime64('{micro_text(low)}', 6, 'UTC') "
            f"AND start_time <= toDateTime64('{micro_text(high)}', 6, 'UTC') "
            f"AND (trace_id, span_id, {layout.VERSION}) IN ({tuples})",
            settings={**delete_sync(store, 0), **naming.settings(QUEUED_SETTINGS)},
        )


def _id(value: str) -> str:
    """An id as a string literal (ids are hex text; anything else escaped)."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def _applied(store: SpanStore, timeout_s: float) -> bool:
    """Wait until the fold's own deletes are applied (not a re-stamp or a rollup delete
    queued on the same tables); False when `timeout_s` passed."""
    return settle(store, timeout_s, ("spans",), _OWN)


def fold_copies(store: SpanStore) -> Folded:
    """Delete every span's older copies (see above); answers what was found and deleted. An
    earlier fold's deletes still queued (an open whose wait ran out, tried again) are waited
    on, never queued again: each try would otherwise add the same deletes to the engine's
    queue."""
    found = store.client.query(f"SELECT count() FROM {store.table('spans')}").result_rows
    rows = int(found[0][0]) if found else 0
    if not rows:  # a new store
        return Folded()
    if not _applied(store, WAIT_S):
        raise DatabaseUnavailable(
            f"The span store at {store.target.describe()} is still applying an earlier fold's "
            f"deletes of older copies of spans after {WAIT_S:.0f} s; the engine goes on with "
            "them. Check system.mutations, then open the store again."
        )
    folded = Folded()
    by_org: dict[int, list] = defaultdict(list)
    for org_id, trace_id, span_id, version, start in _older_copies(store):
        if version is None:
            folded.tied += 1
        else:
            by_org[org_id].append((trace_id, span_id, version, start))
    for org_id, copies in sorted(by_org.items()):
        _delete(store, org_id, copies)
        folded.deleted[org_id] = len(copies)
    if folded.deleted and not _applied(store, WAIT_S):
        raise DatabaseUnavailable(
            f"The span store at {store.target.describe()} has not yet applied the deletes of "
            f"{sum(folded.deleted.values())} older copies of spans after {WAIT_S:.0f} s; the "
            "engine goes on with them (until then those spans may be listed twice). Check "
            "system.mutations, then open the store again."
        )
    return folded
