"""The span store's rollups and hours' users and sessions kept for the org's rollup retention
(docs/scale.md, "Retention on the span store").

The same rule as the other stores (`storage/retention._expire_rollups`): a row whose bucket
started before now less the org's `rollup_retention_days` goes, in every grain and in
`rollup_actors_1hour`; an org with none set keeps them. The worker's retention run reads the
setting when it deletes, so a change needs no re-stamp and rows written before any schema
version follow it. The views cannot carry a stamp here as they carry `retain_days` to the
trace totals: the spans hold their span retention, not the org's rollup retention.

One lightweight DELETE per org and table (the engine masks the rows at once and drops them
as parts merge), sent only when a count on the table's key prefix (org, bucket) finds rows
before the cutoff. On a cluster it goes to every shard's `<table>_local` (`ON CLUSTER`,
queued, waiting for no node), and the count reads every shard through the Distributed table.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.cluster import QUEUED_SETTINGS
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.ddl import ACTORS
from observatory_core.storage.clickhouse.layout import micro_text

TABLES = (*(f"rollup_{grain}" for grain in layout.GRAIN_SECONDS), ACTORS)


def cutoffs(policies: Iterable, now: datetime) -> dict[int, datetime]:
    """Org -> the bucket start before which its rollup rows go (orgs that keep them left
    out); `policies` as `storage/retention.policies` reads them."""
    return {
        p.org_id: now - timedelta(days=p.rollup_days) for p in policies if p.rollup_days is not None
    }


def expire_rollups(store: SpanStore, policies: Iterable, now: datetime) -> dict[int, int]:
    """Delete each org's rollup and actor rows older than its rollup retention; answers org
    -> rows deleted (partial rows of a bucket not yet merged count one each)."""
    out: dict[int, int] = {}
    naming = store.naming
    for org_id, cutoff in sorted(cutoffs(policies, now).items()):
        params = {"org": org_id, "cutoff": micro_text(cutoff)}
        where = "org_id = %(org)s AND bucket_start < toDateTime64(%(cutoff)s, 6, 'UTC')"
        for table in TABLES:
            ((count,),) = store.client.query(
                f"SELECT count() FROM {store.table(table)} WHERE {where}", parameters=params
            ).result_rows
            if not count:
                continue
            store.client.command(
                f"DELETE FROM {naming.stored(table)}{naming.on} WHERE {where}",
                parameters=params,
                settings=naming.settings(QUEUED_SETTINGS),
            )
            out[org_id] = out.get(org_id, 0) + int(count)
    return out
