"""The ClickHouse schema as versioned DDL, for one node or a cluster, from the same code.

`MIGRATIONS` lists the versions; each yields its statements for a `Naming` (a database, and a
cluster or none: `cluster.py`). `apply_schema` runs the missing versions at open (`ON CLUSTER`
when the setting names a cluster) and records each in `schema_versions`; every statement is
`IF NOT EXISTS`, so a run that stopped half-way, two processes starting together, or a second
run change nothing. `ddl_text` prints the same
statements for an operator (`python -m observatory_core clickhouse-ddl [--cluster NAME]`;
docs/scale.md, "A cluster").

On a cluster every table is created `ON CLUSTER` with a Replicated engine as `<name>_local`,
and a Distributed table `<name>` over the shards takes its place, so readers and writers name
the same tables on one node and on a cluster. Spans are sharded by `SHARDING_KEY`: a trace
stays on one shard, so its totals (fed on the shard that stores its spans) and a span sent
twice (the same key, the same shard) never meet across shards.

A migration is never edited once released: a new rollup column (a metric declared with new
partials) or a new skip index is a new version with its `ALTER TABLE`, as on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from observatory_core.base.errors import ConfigError
from observatory_core.semantic.metrics import sketched
from observatory_core.storage.clickhouse import layout, rollup_select
from observatory_core.storage.clickhouse.cluster import DDL_SETTINGS, Naming, schema_errors
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.fold_copies import fold_copies
from observatory_core.storage.clickhouse.layout import micro_text

# A trace's spans on one shard; an org's traces spread over every shard.
SHARDING_KEY = "cityHash64(org_id, trace_id)"
ROLLUP_HOUR = layout.GRAIN_SECONDS["1hour"]


def _table(
    naming: Naming,
    name: str,
    columns: list[str],
    engine: str,
    tail: list[str],
    sharding: str | None = SHARDING_KEY,
) -> list[str]:
    """CREATE for the table that stores rows, and on a cluster the Distributed one over it
    (`sharding`: how inserts into it pick a shard; None for a table only its views fill)."""
    body = ",\n    ".join(columns)
    out = [
        f"CREATE TABLE IF NOT EXISTS {naming.stored(name)}{naming.on}\n(\n    {body}\n)\n"
        f"ENGINE = {engine}\n" + "\n".join(tail)
    ]
    if naming.cluster:
        local = naming.stored(name).split(".", 1)[1]
        out.append(
            f"CREATE TABLE IF NOT EXISTS {naming.read(name)}{naming.on} AS {naming.stored(name)}\n"
            f"ENGINE = Distributed({naming.cluster}, {naming.database}, {local}"
            + (f", {sharding})" if sharding else ")")
        )
    return out


def _spans(naming: Naming) -> list[str]:
    columns = [c.ddl() for c in layout.span_columns()] + [i.ddl() for i in layout.skip_indexes()]
    return _table(
        naming,
        "spans",
        columns,
        naming.engine("ReplacingMergeTree", "spans", layout.VERSION),
        [
            "PARTITION BY toYYYYMM(start_time)",
            # the org/project/time reads narrow by the key's prefix; identity closes it, so the
            # engine folds the copies of a span sent twice when it merges parts
            "PRIMARY KEY (org_id, project_id, start_time)",
            "ORDER BY (org_id, project_id, start_time, trace_id, span_id)",
            # the retention hook: a span written with retain_days > 0 is deleted that many days
            # after it started (docs/scale.md)
            f"TTL toDateTime(start_time) + toIntervalDay({layout.RETAIN_DAYS}) "
            f"WHERE {layout.RETAIN_DAYS} > 0",
            "SETTINGS index_granularity = 8192",
        ],
    )


def _counted_spans() -> str:
    """Spans that count in figures (not a twin set aside: `semantic/duplicates.py`)."""
    return rollup_select.counted_spans()  # the repairs' WHERE too, built once


def _view(
    naming: Naming,
    name: str,
    target: str,
    select: str,
    group: list[str],
    source: str = "spans",
    alias: str = "spans",
) -> str:
    """A view filling `target` from each block inserted into `source` (read as `alias`): the
    counted spans, or (a rollup) the rows another view just wrote there."""
    where = f"\nWHERE {_counted_spans()}" if source == "spans" else ""
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {naming.read(name)}{naming.on}\n"
        f"TO {naming.stored(target)}\nAS SELECT\n    {select}\n"
        f"FROM {naming.stored(source)} AS {alias}{where}\n"
        f"GROUP BY {', '.join(group)}"
    )


def _trace_totals(
    naming: Naming, *, versions: bool = False, retention: bool = False, view_only: bool = False
) -> list[str]:
    """The table and its view; `versions`: with version 4's columns (`layout.version_partials`);
    `retention`: with version 6's (`layout.trace_retention_partial`); `view_only`: the view's
    statement alone."""
    keys = ["org_id", "project_id", "trace_id"]
    partials = layout.trace_total_partials(versions=versions, retention=retention)
    columns = ["`org_id` Int32", "`project_id` Int32", "`trace_id` String CODEC(ZSTD(1))"]
    columns += [p.column.ddl() for p in partials]
    table = _table(
        naming,
        "trace_totals",
        columns,
        naming.engine("AggregatingMergeTree", "trace_totals"),
        ["ORDER BY (org_id, project_id, trace_id)"],
    )
    select = ",\n    ".join(
        [f"spans.{k} AS {k}" for k in keys] + [f"{p.select} AS {p.column.name}" for p in partials]
    )
    view = _view(naming, "trace_totals_mv", "trace_totals", select, [f"spans.{k}" for k in keys])
    return [view] if view_only else [*table, view]


def _trace_versions(naming: Naming) -> list[str]:
    """Version 4: when each trace's spans were written (`layout.version_partials`), so a page
    pinned before a trace grew keeps its totals as of the pin. The columns are added to the
    table (and the Distributed one on a cluster), then the view's query replaced in place
    (atomic, as version 3 does): spans written before it count as older than any pin."""
    names = [naming.stored("trace_totals")]
    if naming.cluster:
        names.append(naming.read("trace_totals"))
    out = [
        f"ALTER TABLE {n}{naming.on} ADD COLUMN IF NOT EXISTS {p.column.ddl()}"
        for n in names
        for p in layout.version_partials()
    ]
    (view,) = _trace_totals(naming, versions=True, view_only=True)
    query = view.split("\nAS ", 1)[1]
    out.append(f"ALTER TABLE {naming.read('trace_totals_mv')}{naming.on} MODIFY QUERY {query}")
    return out


def _rollups(naming: Naming, *, bins: bool, views_only: bool = False) -> list[str]:
    """The finest grain is folded from the spans; each coarser one from the rows the finer
    one's view writes (a cascade: the hour reads a minute's few rows, not its spans again).
    `bins`: the latency bins (version 3 on) or, as versions 1-2 made them, a t-digest state;
    `views_only`: the views alone (version 3 recreates them over the tables it altered)."""
    keys = layout.rollup_keys()
    partials = layout.rollup_partials(bins=bins)
    out: list[str] = []
    finer: str | None = None
    for grain, seconds in layout.GRAIN_SECONDS.items():
        name = f"rollup_{grain}"
        columns = ["`org_id` Int32", f"`bucket_start` {layout.BUCKET} CODEC(Delta, ZSTD(1))"]
        columns += [c.ddl() for c, _ in keys] + [p.column.ddl() for p in partials]
        order = ["org_id", "bucket_start", *(c.name for c, _ in keys)]
        out += (
            []
            if views_only
            else _table(
                naming,
                name,
                columns,
                naming.engine("AggregatingMergeTree", name),
                ["PARTITION BY toYYYYMM(bucket_start)", f"ORDER BY ({', '.join(order)})"],
                sharding=None,  # filled on each shard by its view, read through the Distributed one
            )
        )
        group = ["org_id", "bucket_start", *(c.name for c, _ in keys)]
        if finer is None:  # the SELECT every repair runs too (`rollup_select.py`)
            select = rollup_select.items(grain, partials)
            out.append(_view(naming, f"{name}_mv", name, ",\n    ".join(select), group))
        else:
            bucket = f"toStartOfInterval(rows.bucket_start, INTERVAL {seconds} SECOND, 'UTC')"
            select = [
                "rows.org_id AS org_id",
                f"toDateTime({bucket}, 'UTC') AS bucket_start",
                *(f"rows.{c.name} AS {c.name}" for c, _ in keys),
                *(f"{layout.merged(p.column)} AS {p.column.name}" for p in partials),
            ]
            group = ["org_id", "bucket_start", *(f"rows.{c.name}" for c, _ in keys)]
            out.append(
                _view(naming, f"{name}_mv", name, ",\n    ".join(select), group, finer, "rows")
            )
        finer = name
    return out


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[Naming], list[str]]
    # the version's tables filled from the spans already stored, after its statements: the
    # INSERT for a naming and more conditions on the spans (`fill_by_month` runs it at open
    # one month at a time; `ddl_text` prints it whole)
    fill: Callable[[Naming, str], str] | None = None
    # a data step at open, after the statements and the fill (not printed by `ddl_text`: a
    # new database has no rows for it)
    run: Callable[[SpanStore], object] | None = None


def _migrate_checkpoints(naming: Naming) -> list[str]:
    """Where `migrate-spans` has got to, per source database and org (`migrate_spans.py`): the
    key of the last span copied. Small, written once a batch, read by the newest `updated_at`;
    every node of a cluster keeps the whole table, as it keeps `schema_versions`."""
    engine = naming.engine("ReplacingMergeTree", "migrate_checkpoints", "updated_at", sharded=False)
    return [
        f"CREATE TABLE IF NOT EXISTS {naming.database}.migrate_checkpoints{naming.on}\n(\n"
        "    `source` String,\n    `org_id` Int32,\n"
        f"    `start_time` {layout.TIME},\n    `trace_id` String,\n    `span_id` String,\n"
        "    `copied` UInt64,\n    `skipped` UInt64,\n"
        f"    `updated_at` {layout.TIME}\n)\n"
        f"ENGINE = {engine}\nORDER BY (source, org_id)"
    ]


def _latency_bins(naming: Naming) -> list[str]:
    """The rollups' latency bins (`layout.BINS_COLUMN`) in place of the t-digest states: the
    column added to each rollup table (and its Distributed table on a cluster), each view's
    query replaced in place (`ALTER TABLE ... MODIFY QUERY`, atomic: no insert reaches a view
    that is not there), then the digest column dropped, once no view writes it.

    Views go coarsest first, the minute's last: until the minute's view selects them, spans
    reach the rollups with no bins, which percentiles notice (`rows_with_bins`). Every
    statement can run twice (IF [NOT] EXISTS, the same query set again), so a run that stopped
    half-way, or two processes opening the store together, change nothing more."""
    tables = [f"rollup_{grain}" for grain in layout.GRAIN_SECONDS]
    bins = layout.bins_partial().column
    digest = layout.digest_column(sketched().rollup.column)
    names = [naming.stored(t) for t in tables]
    if naming.cluster:
        names += [naming.read(t) for t in tables]  # the Distributed tables' own columns
    out = [f"ALTER TABLE {n}{naming.on} ADD COLUMN IF NOT EXISTS {bins.ddl()}" for n in names]
    views = _rollups(naming, bins=True, views_only=True)  # finest first
    for table, view in reversed(list(zip(tables, views, strict=True))):
        # the view's query replaced in place, atomically: a DROP and CREATE lost the blocks
        # inserted between them, and a second process opening the store redid them (review)
        query = view.split("\nAS ", 1)[1]
        out.append(f"ALTER TABLE {naming.read(table + '_mv')}{naming.on} MODIFY QUERY {query}")
    out += [f"ALTER TABLE {n}{naming.on} DROP COLUMN IF EXISTS {digest}" for n in names]
    return out


ACTORS = "rollup_actors_1hour"
# One row per (org, hour, project, kind, actor): who was seen, no count (see `_actors`).
_ACTOR_COLUMNS = [
    "`org_id` Int32",
    f"`bucket_start` {layout.BUCKET} CODEC(Delta, ZSTD(1))",
    "`project_id` Int32",
    "`kind` LowCardinality(String)",
    "`actor` String CODEC(ZSTD(1))",
]


def actors_select(source: str, where: str = "") -> str:
    """The users and sessions each hour of `source`'s counted spans saw (the view's query, and
    the back-fill's and `rebuild.py`'s with `where`, more conditions on the spans)."""
    hour = f"toStartOfInterval(spans.start_time, INTERVAL {ROLLUP_HOUR} SECOND, 'UTC')"
    return (
        "SELECT\n    spans.org_id AS org_id,\n"
        f"    toDateTime({hour}, 'UTC') AS bucket_start,\n"
        "    spans.project_id AS project_id,\n    pair.1 AS kind,\n"
        "    assumeNotNull(pair.2) AS actor\n"
        f"FROM {source} AS spans\n"
        "ARRAY JOIN [('user', spans.user_id), ('session', spans.session_id)] AS pair\n"
        f"WHERE {_counted_spans()} AND pair.2 IS NOT NULL{where}\n"
        "GROUP BY org_id, bucket_start, project_id, kind, actor"
    )


def _actors(naming: Naming) -> list[str]:
    """Version 5: the distinct users and sessions of each hour (`rollup_actors_1hour`), as
    PostgreSQL's actor rollups keep them, filled by a view over the counted spans, then filled
    from the spans already stored. A set, not a count: a row seen twice (the back-fill and the
    view both seeing a span inserted meanwhile, a run repeated) changes no distinct count, and
    the ReplacingMergeTree folds it. On a cluster each shard's view fills its own rows and the
    back-fill writes this node's from every shard's spans (reads union the shards)."""
    table = _table(
        naming,
        ACTORS,
        _ACTOR_COLUMNS,
        naming.engine("ReplacingMergeTree", ACTORS),
        [
            "PARTITION BY toYYYYMM(bucket_start)",
            "ORDER BY (org_id, bucket_start, project_id, kind, actor)",
        ],
        sharding=None,  # filled on each shard by its view, read through the Distributed one
    )
    view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {naming.read(ACTORS + '_mv')}{naming.on}\n"
        f"TO {naming.stored(ACTORS)}\nAS {actors_select(naming.stored('spans'))}"
    )
    return [*table, view]  # then `_actors_fill`


def _actors_fill(naming: Naming, where: str = "") -> str:
    """Version 5's fill: the hours' actors of the spans already stored (`where`: more
    conditions on them). Run again it changes nothing (a set)."""
    source = naming.read("spans") if naming.cluster else naming.stored("spans")
    return f"INSERT INTO {naming.stored(ACTORS)}\n{actors_select(source, where)}"


def _trace_retention(naming: Naming) -> list[str]:
    """Version 6: a trace total goes when the spans it counts have gone. Each partial row
    keeps the largest `retain_days` of its spans, a span kept forever winning
    (`layout.trace_retention_partial`), and the table's TTL deletes it that many days after
    its last span started: by then the spans' own TTL (start + days) has deleted every span it
    counts. The column is added to the table (and the Distributed one on a cluster), the TTL
    set without rewriting the stored parts (their rows hold 0, kept, until `restamp.py` stamps
    them), then the view's query replaced in place (atomic, as versions 3 and 4 do)."""
    names = [naming.stored("trace_totals")]
    if naming.cluster:
        names.append(naming.read("trace_totals"))
    days = layout.trace_retention_partial().column
    out = [f"ALTER TABLE {n}{naming.on} ADD COLUMN IF NOT EXISTS {days.ddl()}" for n in names]
    out.append(
        f"ALTER TABLE {naming.stored('trace_totals')}{naming.on} MODIFY TTL "
        f"{layout.trace_totals_ttl()} SETTINGS materialize_ttl_after_modify = 0"
    )
    (view,) = _trace_totals(naming, versions=True, retention=True, view_only=True)
    query = view.split("\nAS ", 1)[1]
    out.append(f"ALTER TABLE {naming.read('trace_totals_mv')}{naming.on} MODIFY QUERY {query}")
    return out


def _span_ids(naming: Naming) -> list[str]:
    """Version 8: each span's id stored (`layout.SPAN_ID_COLUMN`, the hash the reads computed
    for every row of a window before its page: docs/span-store-internals.md, "spans"). A
    `MATERIALIZED` column: inserts name their columns and never write it, the engine computes it for
    each new row, and reads of parts written before compute it as they go until the stored parts are
    rewritten with it. That rewrite is queued, not waited on (`mutations_sync = 0`; on a cluster
    each node has queued it): the open takes no longer with the store's size (1M spans took ~1.5 s
    in the background on chDB)."""
    names = [naming.stored("spans")]
    if naming.cluster:
        names.append(naming.read("spans"))  # as `CREATE ... AS spans_local` would make it
    return [
        *(
            f"ALTER TABLE {n}{naming.on} ADD COLUMN IF NOT EXISTS {layout.SPAN_ID_COLUMN}"
            for n in names
        ),
        f"ALTER TABLE {naming.stored('spans')}{naming.on} MATERIALIZE COLUMN id "
        "SETTINGS mutations_sync = 0",
    ]


def _wrapper_move_journal(naming: Naming) -> list[str]:
    """Version 9: each org's wrapper moves (`wrapper_move_journal.py`): a few rows per move,
    each its whole state as a step lands, the newest `step` the one read. Every row of a move
    has the move's `begun_at`, and the TTL deletes them by it, so no row outlives a newer one
    of its move (the reads leave out what the TTL has still to delete: `JOURNAL_DAYS`). Every
    node of a cluster keeps the whole table, as it keeps `schema_versions` (no move runs on a
    cluster yet)."""
    engine = naming.engine("ReplacingMergeTree", "wrapper_move_journal", "step", sharded=False)
    return [
        f"CREATE TABLE IF NOT EXISTS {naming.database}.wrapper_move_journal{naming.on}\n(\n"
        "    `org_id` Int32,\n    `move_id` String,\n"
        f"    `begun_at` {layout.TIME},\n"
        "    `step` UInt32,\n    `done` UInt8,\n    `state` String CODEC(ZSTD(1))\n)\n"
        f"ENGINE = {engine}\nORDER BY (org_id, move_id)\n"
        f"TTL {layout.JOURNAL_EXPIRES}"
    ]


# Version 10: the columns a page of spans reads for its few rows alone (the engine's lazy reads
# after its top-n: each row's granule of each column decompressed whole). LZ4 decompresses them
# about three times faster than ZSTD(1), for about 15 bytes more a span
# (docs/span-store-internals.md, "spans").
LZ4_COLUMNS = ("trace_id", "span_id", "name", "user_id")
# their types when version 10 was released: pinned, so a later change of the layout cannot alter
# what this migration sends
_LZ4_TYPES = {
    "trace_id": "String",
    "span_id": "String",
    "name": "String",
    "user_id": "Nullable(String)",
}


def _page_columns_lz4(naming: Naming) -> list[str]:
    """Version 10: `LZ4_COLUMNS` compressed with LZ4. The change of codec is the table's
    metadata alone: parts written from then on (inserts, merges) take it, and the stored parts
    keep ZSTD(1) until they merge, on chDB as on a server. No part is rewritten at open: a
    queued `REWRITE PARTS` held back every wrapper move's `ALTER TABLE spans UPDATE` until it
    had reached the org's parts (74 s after opening a store of 10M spans). An operator rewrites
    them at a quiet time (docs/scale.md, "Known gaps"); the bench before its reads
    (`bench/clickhouse_app_stores.rewrite_old_parts`)."""
    return [
        f"ALTER TABLE {naming.stored('spans')}{naming.on} MODIFY COLUMN `{name}` "
        f"{_LZ4_TYPES[name]} CODEC(LZ4)"
        for name in LZ4_COLUMNS
    ]


# One month of spans (a partition of the spans table, `_spans`): a fill's piece at open.
_MONTH = (
    " AND spans.start_time >= toDateTime64(%(start)s, 6, 'UTC')"
    " AND spans.start_time < toDateTime64(%(end)s, 6, 'UTC')"
)


def months(store: SpanStore) -> list[datetime]:
    """The first day of each month that holds spans, oldest first: the partitions of the
    spans table's active parts with rows (`system.parts`, on a cluster every node's), not a
    scan of the spans. Calendar months between two that hold spans are left out: a store with
    one span from 2019 and the rest in 2026 fills two months at open, not eighty."""
    table = store.naming.stored("spans").split(".", 1)[1]
    rows = store.client.query(
        f"SELECT DISTINCT partition FROM {store.naming.every_node('parts')} "
        "WHERE database = %(db)s AND table = %(table)s AND active AND rows > 0",
        parameters={"db": store.database, "table": table},
    ).result_rows
    # the partition key is toYYYYMM(start_time): '202611'
    return sorted(datetime(int(p) // 100, int(p) % 100, 1, tzinfo=UTC) for (p,) in rows)


def _next_month(month: datetime) -> datetime:
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


def fill_by_month(store: SpanStore, fill: Callable[[Naming, str], str], settings: dict) -> int:
    """Run a migration's fill one month of spans at a time, each INSERT reading one partition:
    one INSERT over every span passed the client's 60 s wait (`connect.py`) at about 100M
    spans, and the open started the whole fill again each time; a month's piece is bounded by
    that month's spans (docs/span-store-internals.md). Answers the months filled."""
    statement = fill(store.naming, _MONTH)
    done = months(store)
    for month in done:
        params = {"start": micro_text(month), "end": micro_text(_next_month(month))}
        store.client.command(statement, parameters=params, settings=settings)
    return len(done)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "spans, trace totals, rollups by minute, hour and day",
        lambda n: [*_spans(n), *_trace_totals(n), *_rollups(n, bins=False)],
    ),
    Migration(2, "migrate-spans checkpoints", _migrate_checkpoints),
    Migration(3, "latency bins in the rollups, in place of t-digest states", _latency_bins),
    Migration(4, "when each trace's spans were written, in its totals", _trace_versions),
    Migration(5, "distinct users and sessions per hour", _actors, _actors_fill),
    Migration(6, "trace totals expire with the spans they count", _trace_retention),
    Migration(7, "each span stored once: older copies folded", lambda n: [], run=fold_copies),
    Migration(8, "each span's id stored", _span_ids),
    Migration(9, "a journal of the wrapper moves not finished yet", _wrapper_move_journal),
    Migration(10, "the lazily read page columns in LZ4", _page_columns_lz4),
)


def _versions_table(naming: Naming) -> str:
    # every node keeps the whole list (no shard in its keeper path)
    engine = naming.engine("ReplacingMergeTree", "schema_versions", "applied_at", sharded=False)
    return (
        f"CREATE TABLE IF NOT EXISTS {naming.database}.schema_versions{naming.on}\n(\n"
        "    `version` UInt32,\n    `name` String,\n"
        f"    `applied_at` {layout.TIME} DEFAULT now64(6)\n)\n"
        f"ENGINE = {engine}\nORDER BY version"
    )


def statements(naming: Naming) -> list[str]:
    """Every statement of the current schema, in order, without the version records."""
    out = [f"CREATE DATABASE IF NOT EXISTS {naming.database}{naming.on}", _versions_table(naming)]
    for migration in MIGRATIONS:
        out += migration.statements(naming)
    return out


def ddl_text(database: str, cluster: str | None = None) -> str:
    """The DDL an operator runs (clickhouse-client --multiquery), ending with the version
    records, so a store opened on it afterwards finds nothing left to apply."""
    naming = Naming(database, cluster)
    where = f"cluster {cluster}, sharded by {SHARDING_KEY}" if cluster else "one node"
    head = (
        f"-- LLM Observatory span store, schema version {MIGRATIONS[-1].version}, "
        f"database {database}, {where}.\n-- Generated by `python -m observatory_core "
        "clickhouse-ddl`; docs/scale.md says how to run it."
    )
    records = ", ".join(f"({m.version}, '{m.name}')" for m in MIGRATIONS)
    # a new database's fills find no spans; printed whole for one already holding some
    fills = [m.fill(naming, "") for m in MIGRATIONS if m.fill is not None]
    body = [
        *statements(naming),
        *fills,
        f"INSERT INTO {database}.schema_versions (version, name) VALUES {records}",
    ]
    return head + "\n\n" + ";\n\n".join(body) + ";\n"


def applied_versions(store: SpanStore) -> set[int]:
    result = store.client.query(f"SELECT DISTINCT version FROM {store.table('schema_versions')}")
    return {int(row[0]) for row in result.result_rows}


def apply_schema(store: SpanStore) -> list[int]:
    """Create what is missing and record each version applied; answers the versions this run
    applied (none when the schema was current). On one node, in the store's own database; on a
    cluster (`store.naming.cluster`), every statement `ON CLUSTER`, each waiting for every node
    (`cluster.DDL_SETTINGS`), so a version is recorded once every node has it. Checks that the
    tables are laid out for the setting (`check_layout`) before applying anything, and again
    after (a new database has no spans table to check before)."""
    naming = store.naming
    client = store.client
    settings = naming.settings(DDL_SETTINGS)  # none on one node

    def run(statement: str) -> None:
        client.command(statement, settings=settings)

    ran: list[int] = []
    with schema_errors(naming):
        # before any statement: a database laid out for the other setting would get the wrong
        # ones (ON CLUSTER on one node; on a cluster's, its views re-pointed at the Distributed
        # spans and versions recorded that its other nodes never ran)
        found = check_layout(store)
        # on a cluster, each statement waits for every node: a store already made sends none
        # when nothing is left to apply, so a node down does not stop the others' opens
        if not (naming.cluster and _has_versions_table(store)):
            run(f"CREATE DATABASE IF NOT EXISTS {naming.database}{naming.on}")
            run(_versions_table(naming))
        done = applied_versions(store)
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements(naming):
                run(statement)
            if migration.fill is not None:
                fill_by_month(store, migration.fill, settings)
            if migration.run is not None:
                migration.run(store)
            # on a cluster every node keeps the whole list (`_versions_table`): one insert
            # reaches them all by replication
            client.insert(
                store.table("schema_versions"),
                [[migration.version, migration.name, datetime.now(UTC)]],
                column_names=["version", "name", "applied_at"],
            )
            ran.append(migration.version)
    if not found:  # a new database: its tables checked once made
        check_layout(store)
    return ran


def _has_versions_table(store: SpanStore) -> bool:
    ((count,),) = store.client.query(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = 'schema_versions'",
        parameters={"db": store.database},
    ).result_rows
    return bool(count)


def check_layout(store: SpanStore) -> bool:
    """A `ConfigError` when the spans table is not laid out for the setting: a database made
    with the cluster DDL opened without `cluster=` (inserts queued in the background, mutations
    sent to a Distributed table), or one made for one node opened with it. Answers whether
    there was a spans table to check (none yet in a new database)."""
    rows = store.client.query(
        "SELECT engine FROM system.tables WHERE database = %(db)s AND name = 'spans'",
        parameters={"db": store.database},
    ).result_rows
    if not rows:
        return False
    distributed = rows[0][0] == "Distributed"
    if distributed and not store.naming.cluster:
        raise ConfigError(
            f"The span store's database {store.database} was made for a cluster (its spans "
            "table is Distributed): add ?cluster=NAME to the URL (docs/scale.md, 'A cluster')."
        )
    if store.naming.cluster and not distributed:
        raise ConfigError(
            f"The span store's database {store.database} was made for one node (its spans "
            f"table is not Distributed), but the URL names the cluster {store.naming.cluster}: "
            "remove ?cluster= or use a database made for the cluster (docs/scale.md)."
        )
    return True
