"""Stored spans' `retain_days` brought to their org's and projects' current span retention
(docs/scale.md, "Retention").

Each span carries its retention days (the table's TTL hook), stamped as it is written
(`writes.py`). When a setting changes, the spans already stored keep their old stamp until one
mutation per org rewrites it: `ALTER TABLE spans UPDATE retain_days = <the org's days, or a
project's own> WHERE org_id = ? AND retain_days != <the same>`. One statement per org sets
every project (an org's change leaves a project's own setting in place, a project that drops
its own falls back to the org's), and parts holding no span to change are not rewritten. The
engine recomputes the TTL of the parts it rewrites, so spans now past their retention go with
the mutation. A mutation is kept by the engine once accepted and finished in the background,
also after a restart; `reconcile` (the worker's retention run) re-stamps whatever still
differs: a change the store was unreachable for, or spans ingest stamped with the settings it
had read before the change (it reads them at most once a minute).

On a cluster the mutation goes to every shard's `spans_local` (`ALTER TABLE spans_local ON
CLUSTER ...`: a Distributed table takes no mutation), and the unfinished or failing mutations
are read on every node (`clusterAllReplicas`); the stale rows are counted through the
Distributed `spans`, over every shard.

The trace totals (schema version 6) carry the largest days of the spans they count (a span kept
forever, 0, as `layout.FOREVER_DAYS`, so it wins), and their TTL deletes a row once its last
span's retention has passed: the same mutation re-stamps them (`TABLES`, with forever as
`FOREVER_DAYS`), so a change reaches the totals with the spans, and rows written before
version 6 (0, kept) are stamped by the first `reconcile` after the upgrade.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from observatory_core.base.errors import DatabaseUnavailable, first_line
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.cluster import QUEUED_SETTINGS
from observatory_core.storage.clickhouse.connect import SpanStore

DAYS = layout.RETAIN_DAYS
WAIT_S = 600.0  # how long `settle` waits for the mutations by default (the command line)
# The tables whose rows carry the stamp; a store before schema version 6 has it on spans only.
TABLES = ("spans", "trace_totals")


@dataclass(frozen=True)
class Stamp:
    """One org's span retention as the store stamps it: days (0: kept until deleted) for the
    org and for the projects with their own."""

    org_id: int
    span_days: int = 0
    project_days: Mapping[int, int] = field(default_factory=dict)

    def days(self, project_id: int, table: str = "spans") -> int:
        """The stamp of `table`'s rows of the project: the spans' TTL days (0: kept), or the
        trace totals' (`layout.total_days`: forever as `FOREVER_DAYS`)."""
        return _days_in(table)(self.project_days.get(project_id, self.span_days))

    def sql(self, table: str = "spans") -> str:
        """The stamp of `table`'s rows as a ClickHouse expression of `project_id` (whole
        numbers only: inlined)."""
        days = _days_in(table)
        own = {int(p): days(d) for p, d in sorted(self.project_days.items())}
        org = days(self.span_days)
        if not own:
            return f"toUInt16({org})"
        keys = ", ".join(str(p) for p in own)
        values = ", ".join(str(d) for d in own.values())
        return f"toUInt16(transform(project_id, [{keys}], [{values}], {org}))"


def _days_in(table: str) -> Callable[[int | None], int]:
    """How `table` stamps a retention of n days: the trace totals keep forever as the largest
    stamp, so it wins their `max` over a trace's spans (`layout.trace_retention_partial`)."""
    return layout.total_days if table == "trace_totals" else layout.ttl_days


def stamps_of(policies: Iterable) -> dict[int, Stamp]:
    """`storage/retention.py`'s policies (None: forever) as stamps, by org."""
    return {
        p.org_id: Stamp(p.org_id, p.span_days or 0, {k: v or 0 for k, v in p.project_days.items()})
        for p in policies
    }


def retain_days(stamps: Iterable[Stamp]) -> dict[tuple[int, int], int]:
    """The stamps as `writes.write_spans` takes them: (org, 0) for the org, (org, project)."""
    out: dict[tuple[int, int], int] = {}
    for s in stamps:
        out[(s.org_id, 0)] = int(s.span_days or 0)
        out.update({(s.org_id, int(p)): int(d or 0) for p, d in s.project_days.items()})
    return out


@contextmanager
def store_errors(store: SpanStore) -> Iterator[None]:
    """Any failure of the engine said as one sentence (`DatabaseUnavailable`): the caller has
    saved the setting already and reports, it does not crash."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    try:
        yield
    except ClickHouseError as exc:
        first = first_line(exc)
        raise DatabaseUnavailable(
            f"The span store at {store.target.describe()} did not take the change ({first})."
        ) from exc


def stale(store: SpanStore, stamps: Iterable[Stamp], table: str = "spans") -> dict[int, int]:
    """Org -> how many stored rows of `table` (copies of a span not yet folded, a trace's
    partial totals, included) carry other days than its stamp; orgs with none left out. One
    grouped read of two key columns and the stamp."""
    wanted = {s.org_id: s for s in stamps}
    if not wanted:
        return {}
    with store_errors(store):
        rows = store.client.query(
            f"SELECT org_id, project_id, {DAYS}, count() FROM {store.table(table)} "
            f"WHERE org_id IN %(orgs)s GROUP BY org_id, project_id, {DAYS}",
            parameters={"orgs": sorted(wanted)},
        ).result_rows
    out: dict[int, int] = {}
    for org_id, project_id, days, count in rows:
        if int(days) != wanted[org_id].days(project_id, table):
            out[org_id] = out.get(org_id, 0) + int(count)
    return out


def _tables(store: SpanStore, tables: tuple[str, ...] = TABLES) -> str:
    """`tables` (default: the stamped ones) as a condition on `system.mutations.table`: their
    stored names (`spans_local`, `trace_totals_local` on a cluster)."""
    names = [store.naming.stored(t).split(".", 1)[1] for t in tables]
    return f"table IN ({', '.join(repr(n) for n in names)})"


def _mutations(store: SpanStore, tables: tuple[str, ...] = TABLES) -> str:
    """FROM and WHERE of `tables`' unfinished mutations: this node's, or on a cluster every
    node's mutations of its `spans_local` and `trace_totals_local` (or other tables)."""
    return (
        f"FROM {store.naming.every_node('mutations')} WHERE database = %(db)s "
        f"AND {_tables(store, tables)} AND NOT is_done"
    )


def kill_statement(store: SpanStore, tables: tuple[str, ...] = TABLES) -> str:
    """The statement an operator runs to kill `tables`' unfinished mutations (one that keeps
    failing holds back every re-stamp, or rollup delete, after it): on a cluster, every
    node's."""
    where = _tables(store, tables)
    return f"KILL MUTATION{store.naming.on} WHERE database = '{store.database}' AND {where}"


def pending(store: SpanStore, tables: tuple[str, ...] = TABLES, where: str = "") -> int:
    """Mutations of `tables` (default: the spans and trace totals) the engine has not finished,
    those `where` (a condition on `system.mutations`) picks when given (on a cluster, counted
    once per node that has not)."""
    with store_errors(store):
        ((count,),) = store.client.query(
            f"SELECT count() {_mutations(store, tables)}{f' AND {where}' if where else ''}",
            parameters={"db": store.database},
        ).result_rows
    return int(count)


def failing(store: SpanStore, tables: tuple[str, ...] = TABLES) -> str | None:
    """Why an unfinished mutation of `tables` (default: the spans and trace totals) keeps
    failing (the engine retries it, and it holds back every one after it), or None; on a
    cluster, with the node it fails on."""
    reason = "concat(hostName(), ': ', latest_fail_reason)" if store.naming.cluster else None
    with store_errors(store):
        rows = store.client.query(
            f"SELECT {reason or 'latest_fail_reason'} {_mutations(store, tables)} "
            "AND latest_fail_reason != '' LIMIT 1",
            parameters={"db": store.database},
        ).result_rows
    return str(rows[0][0]) if rows else None


def settle(
    store: SpanStore, timeout_s: float = WAIT_S, tables: tuple[str, ...] = TABLES, where: str = ""
) -> bool:
    """Wait until `pending(store, tables, where)` is none (default: every unfinished mutation
    of the spans and trace totals); False when `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while pending(store, tables, where):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def restamp(store: SpanStore, stamp: Stamp) -> int:
    """Re-stamp the org's stored spans (and trace totals) that differ from `stamp`; answers how
    many span rows the mutation rewrites (0: none). A table with nothing stale gets no
    mutation. The engine finishes them in the background (`settle` waits for the spans').
    Raises `DatabaseUnavailable` on any store failure."""
    count = 0
    for table in TABLES:
        found = stale(store, [stamp], table).get(stamp.org_id, 0)
        if found:
            _mutate(store, stamp, table)
        count = found if table == "spans" else count
    return count


def _mutate(store: SpanStore, stamp: Stamp, table: str = "spans") -> None:
    # parts written after the mutation is accepted are not touched: they were stamped by
    # the write (with settings at most a minute old: `reconcile` covers that minute).
    # On a cluster the statement returns once it is in the cluster's queue, waiting for no
    # node (`QUEUED_SETTINGS`: it is sent while the org's row is held); a node that runs it
    # late shows it unfinished (`pending`), and `reconcile` sends again what still differs
    expr = stamp.sql(table)
    naming = store.naming
    with store_errors(store):
        store.client.command(
            f"ALTER TABLE {naming.stored(table)}{naming.on} UPDATE {DAYS} = {expr} "
            f"WHERE org_id = {int(stamp.org_id)} AND {DAYS} != {expr}",
            # sent, never waited on under a lock
            settings={"mutations_sync": 0, **naming.settings(QUEUED_SETTINGS)},
        )


@dataclass(frozen=True)
class Reconciled:
    """What `reconcile` sent: org -> rows re-stamped, of the spans and of the trace totals."""

    spans: dict[int, int]
    trace_totals: dict[int, int]

    def __bool__(self) -> bool:
        return bool(self.spans or self.trace_totals)


def reconcile(
    store: SpanStore, stamps: Iterable[Stamp], current: Callable[[int], AbstractContextManager]
) -> Reconciled | None:
    """Re-stamp every org whose stored spans or trace totals differ from its stamp; the rows
    rewritten of each. None while an earlier mutation of the tables is unfinished (its rows
    would look stale).

    `current(org_id)`: a context that holds the org's settings still (the lock
    `set_retention` holds until its own mutation is sent) and yields its stamp read afresh:
    sent with settings read before an admin's change, a mutation queued after the admin's
    would stamp the old, shorter days, and its TTL delete at once what the change keeps."""
    if pending(store):
        return None
    stamps = list(stamps)
    found = stale(store, stamps)
    totals = stale(store, stamps, "trace_totals")
    for org_id in sorted(found.keys() | totals.keys()):
        with current(org_id) as stamp:
            for table, stale_rows in (("spans", found), ("trace_totals", totals)):
                if org_id in stale_rows:
                    _mutate(store, stamp, table)
    return Reconciled(found, totals)
