"""The span store's rollups and hours' users and sessions kept for the org's rollup retention
(docs/span-store-internals.md, "Retention").

The same rule as the other stores (`storage/retention._expire_rollups`): a row whose bucket
started before now less the org's `rollup_retention_days` goes, in every grain and in
`rollup_actors_1hour`; an org with none set keeps them. The worker's retention run reads the
setting when it deletes, so a change needs no re-stamp and rows written before any schema
version follow it. The views cannot carry a stamp here as they carry `retain_days` to the
trace totals: the spans hold their span retention, not the org's rollup retention.

One lightweight DELETE per table and group of up to `CHUNK` orgs (each org's cutoff written
once per distinct rollup days: the cutoff depends only on them), sent only when a count finds
rows before the cutoffs (read on the key's prefix, org and bucket), and not while an earlier
mutation of the table is unfinished. The groups bound the statement's text: one statement for
every org at once passed the server's `max_query_size` (262,144 bytes) at about 4,000 orgs,
and no org's rollups were deleted any more. It is not waited on: the engine masks the rows in
the background and drops them as parts merge (each DELETE waited on took about half a second
on chDB, which runs one statement at a time), told so by the setting the server knows
(`cluster.delete_sync`: ClickHouse before 24.4 has no `lightweight_deletes_sync`). On a
cluster it goes to every shard's `<table>_local` (`ON CLUSTER`, queued, waiting for no node),
the count reads every shard through the Distributed table and the unfinished mutations every
node's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.cluster import QUEUED_SETTINGS, delete_sync
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.ddl import ACTORS
from observatory_core.storage.clickhouse.layout import micro_text
from observatory_core.storage.clickhouse.restamp import failing as failing_in
from observatory_core.storage.clickhouse.restamp import kill_statement, store_errors

TABLES = (*(f"rollup_{grain}" for grain in layout.GRAIN_SECONDS), ACTORS)
# orgs per statement: at most this many ids and as many cutoffs, about 45 KB of text at the
# most, well under the server's default `max_query_size` (262,144 bytes)
CHUNK = 500


def cutoffs(policies: Iterable, now: datetime) -> dict[int, datetime]:
    """Org -> the bucket start before which its rollup rows go (orgs that keep them left
    out); `policies` as `storage/retention.policies` reads them."""
    return {
        p.org_id: now - timedelta(days=p.rollup_days) for p in policies if p.rollup_days is not None
    }


def batches(cuts: dict[int, datetime], size: int = CHUNK) -> list[dict[int, datetime]]:
    """The orgs in groups of at most `size`, those of one cutoff together (sorted by it)."""
    orgs = sorted(cuts, key=lambda o: (cuts[o], o))
    return [{o: cuts[o] for o in orgs[i : i + size]} for i in range(0, len(orgs), size)]


def _where(cuts: dict[int, datetime]) -> str:
    """Rows before their org's cutoff: for each cutoff, its orgs and the bucket before it, so
    the key's prefix (org, bucket) narrows the read (whole numbers and times written out: no
    parameters in a mutation's text)."""
    by_cut: dict[datetime, list[int]] = defaultdict(list)
    for org_id, cut in cuts.items():
        by_cut[cut].append(int(org_id))
    return " OR ".join(
        f"(org_id IN ({', '.join(str(o) for o in sorted(orgs))}) "
        f"AND bucket_start < toDateTime64('{micro_text(cut)}', 6, 'UTC'))"
        for cut, orgs in sorted(by_cut.items())
    )


def failing(store: SpanStore) -> str | None:
    """Why a delete of a rollup or actor table keeps failing (the engine retries it, and its
    table's next deletes wait: `_expire` skips a table with one unfinished), or None; on a
    cluster, with the node it fails on."""
    with store_errors(store):
        return failing_in(store, TABLES)


def kill(store: SpanStore) -> str:
    """The statement that kills the rollup and actor tables' unfinished deletes."""
    return kill_statement(store, TABLES)


def _unfinished(store: SpanStore) -> set[str]:
    """The tables (stored names) with a mutation the engine has not finished."""
    names = [store.naming.stored(t).split(".", 1)[1] for t in TABLES]
    rows = store.client.query(
        f"SELECT DISTINCT table FROM {store.naming.every_node('mutations')} "
        "WHERE database = %(db)s AND table IN %(tables)s AND NOT is_done",
        parameters={"db": store.database, "tables": names},
    ).result_rows
    return {str(t) for (t,) in rows}


def expire_rollups(store: SpanStore, policies: Iterable, now: datetime) -> dict[int, int]:
    """Delete each org's rollup and actor rows older than its rollup retention; answers org
    -> rows being deleted (partial rows of a bucket not yet merged count one each). Raises
    `DatabaseUnavailable` on any store failure (said by the worker's run, never a crash)."""
    cuts = cutoffs(policies, now)
    if not cuts:
        return {}
    with store_errors(store):
        return _expire(store, cuts)


def _expire(store: SpanStore, cuts: dict[int, datetime]) -> dict[int, int]:
    naming = store.naming
    busy = _unfinished(store)
    out: dict[int, int] = {}
    for table in TABLES:
        if naming.stored(table).split(".", 1)[1] in busy:
            continue  # the last run's delete is still being applied: the next run goes on
        for batch in batches(cuts):
            where = _where(batch)
            rows = store.client.query(
                f"SELECT org_id, count() FROM {store.table(table)} WHERE {where} GROUP BY org_id"
            ).result_rows
            if not rows:
                continue
            store.client.command(
                f"DELETE FROM {naming.stored(table)}{naming.on} WHERE {where}",
                settings={**delete_sync(store, 0), **naming.settings(QUEUED_SETTINGS)},
            )
            for org_id, count in rows:
                out[int(org_id)] = out.get(int(org_id), 0) + int(count)
    return out
