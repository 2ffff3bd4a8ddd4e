"""SQLite, the embedded default: one file, one writer at a time, Python functions for the SQL
SQLite lacks (percentiles, sample deviation, latency bins, packed sketches).

Timestamps are integer microseconds (`storage/types.py`), so bucketing is integer arithmetic.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, delete, event, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Insert, Select

from observatory_core.base.errors import UserError
from observatory_core.storage import budget, latency_bins, packed_sketch
from observatory_core.storage.dialect import (
    arrival_order,
    epoch_us,
    greatest_of,
    json_array_contains,
    json_object_text,
    json_tag_value,
    latency_bin,
    least_of,
    nano_dollars,
    percentile_cont,
    stddev_samp,
    text_search,
    time_bucket,
    zoned_bucket,
)
from observatory_core.storage.packed_sketch import (
    sketch_add,
    sketch_compact,
    sketch_merge,
    sketch_of,
)
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import _turns as turns
from observatory_core.storage.stores import register
from observatory_core.storage.stores.base import SpanPartition, Store

NAME = "sqlite"
_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
_VACUUM_PAGES = 2000  # pages handed back per step of `reclaim_space` (8 MB at 4 KiB)

# -- the neutral constructs, compiled for SQLite ---------------------------------------------


@compiles(percentile_cont, NAME)
def _percentile(element, compiler, **kw):
    (column,) = element.clauses
    return f"obs_percentile_cont({compiler.process(column, **kw)}, {element.fraction!r})"


@compiles(time_bucket, NAME)
def _bucket(element, compiler, **kw):
    (column,) = element.clauses
    width = element.seconds * 1_000_000
    return f"(({compiler.process(column, **kw)} / {width}) * {width})"


@compiles(zoned_bucket, NAME)
def _zoned_bucket(element, compiler, **kw):
    """SQLite has no zone database: the bucket is found among the query range's edges
    (computed with zoneinfo, `base.zones`) by a balanced tree of comparisons, so each row
    costs about log2(buckets) integer comparisons."""
    (column,) = element.clauses
    value = compiler.process(column, **kw)
    edges = element.bucketing.edges

    def pick(lo: int, hi: int) -> str:  # the bucket among edges[lo:hi] holding the value
        if hi - lo <= 1:
            return str(int(edges[lo]))
        mid = (lo + hi) // 2
        return (
            f"(CASE WHEN {value} < {int(edges[mid])} THEN {pick(lo, mid)} ELSE {pick(mid, hi)} END)"
        )

    return pick(0, max(len(edges) - 1, 1))


@compiles(stddev_samp, NAME)
def _stddev(element, compiler, **kw):
    return f"obs_stddev({compiler.process(element.clauses, **kw)})"


@compiles(json_array_contains, NAME)
def _array_contains(element, compiler, **kw):
    column, value = element.clauses
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.value = {compiler.process(value, **kw)})"
    )


@compiles(json_object_text, NAME)
def _object_text(element, compiler, **kw):
    column, key = element.clauses
    return (
        f"(SELECT CAST(json_each.value AS TEXT) FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.key = {compiler.process(key, **kw)})"
    )


@compiles(json_tag_value, NAME)
def _tag_value(element, compiler, **kw):
    """The first tag (in array order) starting with "<key>:", without the prefix."""
    column = compiler.process(element.clauses, **kw)
    n = len(element.key) + 1
    return (
        f"(SELECT substr(j.value, {n + 1}) FROM json_each({column}) AS j "
        f"WHERE j.type = 'text' AND substr(j.value, 1, {n}) = {element.prefix} "
        "ORDER BY j.key LIMIT 1)"
    )


@compiles(text_search, NAME)
def _search(element, compiler, **kw):
    """The FTS5 trigram table `spans_fts`, matched with a quoted phrase (`search_needle`)."""
    span_id, _inp, _out, needle = (compiler.process(c, **kw) for c in element.clauses)
    return f"({span_id} IN (SELECT rowid FROM spans_fts WHERE spans_fts MATCH {needle}))"


@compiles(latency_bin, NAME)
def _latency_bin(element, compiler, **kw):
    (column,) = element.clauses
    return f"obs_latency_bin({compiler.process(column, **kw)})"


@compiles(nano_dollars, NAME)
def _nano_dollars(element, compiler, **kw):
    return f"round({compiler.process(element.clauses, **kw)}, 9)"


@compiles(least_of, NAME)
def _least(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"coalesce(min({a}, {b}), {a}, {b})"


@compiles(greatest_of, NAME)
def _greatest(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"coalesce(max({a}, {b}), {a}, {b})"


@compiles(arrival_order, NAME)
def _arrival(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)  # the id: it grows with each insert


@compiles(epoch_us, NAME)
def _epoch_us(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)  # stored as microseconds already


@compiles(sketch_of, NAME)
def _sketch_of(element, compiler, **kw):
    return f"coalesce(obs_sketch_of({compiler.process(element.clauses, **kw)}), X'')"


@compiles(sketch_merge, NAME)
def _sketch_merge(element, compiler, **kw):
    # SQLite's own group_concat, not a Python aggregate: it appends each BLOB's bytes unchanged
    # (NULs included; read as text in the database's encoding, UTF-8, checked on connect), and
    # the CAST gives them back as a BLOB. A Python call per row cost ~140 ms for the 30k rollup
    # rows of a 30-day hourly series by model and environment (at 1M spans, under load).
    arg = compiler.process(element.clauses, **kw)
    return f"CAST(coalesce(group_concat({arg}, ''), X'') AS BLOB)"


@compiles(sketch_compact, NAME)
def _sketch_compact(element, compiler, **kw):
    return f"coalesce(obs_sketch_compact({compiler.process(element.clauses, **kw)}), X'')"


@compiles(sketch_add, NAME)
def _sketch_add(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"coalesce(obs_sketch_add({a}, {b}), X'')"


def _from_hint(self, table, text):
    """`select().with_hint(table, "INDEXED BY ix", "sqlite")` writes SQLite's INDEXED BY after
    the table name (SQLAlchemy's SQLite compiler drops table hints; MySQL's writes them so)."""
    return text


SQLiteCompiler.get_from_hint_text = _from_hint

# -- the Python functions the SQL above calls, registered on every connection ----------------


def interpolated_percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class PercentileAggregate:
    """`obs_percentile_cont`: exact, same interpolation as PostgreSQL."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.fraction = 0.5

    def step(self, value, fraction) -> None:
        if value is not None:
            self.values.append(value)
            self.fraction = fraction

    def finalize(self):
        return interpolated_percentile(self.values, self.fraction)


class StddevAggregate:
    """`obs_stddev`: the sample standard deviation (Welford's method)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def step(self, value) -> None:
        if value is not None:
            self.n += 1
            delta = value - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (value - self.mean)

    def finalize(self):
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else None


def sqlite_latency_bin(value):
    """`obs_latency_bin`."""
    return None if value is None else latency_bins.bin_of(value)


# Sketches (storage/packed_sketch.py): the same bytes on every store; SQLite builds and
# compacts them with these Python functions (and merges them with group_concat, above). A
# Python function's empty bytes reach SQL as NULL, hence the coalesce to the empty BLOB in
# the constructs' SQL.


class SketchOf:
    """`obs_sketch_of(bin)`: the compacted sketch of a group's spans."""

    def __init__(self) -> None:
        self.bins: list[int | None] = []

    def step(self, bin_) -> None:
        self.bins.append(bin_)

    def finalize(self) -> bytes:
        return packed_sketch.sketch_bytes(self.bins)


def sqlite_sketch_add(a, b) -> bytes:
    return packed_sketch.compact((a or b"") + (b or b""))


def _on_connect(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # Takes effect only in a file with no tables yet (a new database) or at the next VACUUM:
    # deleted spans' pages can then be handed back (`reclaim_space`, docs/operations.md).
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    # Also only for a new database (SQLite's default, stated): sketches are merged by
    # group_concat, which keeps a BLOB's bytes as they are only in a UTF-8 database.
    cur.execute("PRAGMA encoding='UTF-8'")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
    dbapi_conn.create_aggregate("obs_percentile_cont", 2, PercentileAggregate)
    dbapi_conn.create_aggregate("obs_stddev", 1, StddevAggregate)
    dbapi_conn.create_function("obs_latency_bin", 1, sqlite_latency_bin, deterministic=True)
    dbapi_conn.create_aggregate("obs_sketch_of", 1, SketchOf)
    dbapi_conn.create_function("obs_sketch_compact", 1, packed_sketch.compact, deterministic=True)
    dbapi_conn.create_function("obs_sketch_add", 2, sqlite_sketch_add, deterministic=True)


# -- time budgets: a progress handler that interrupts the statement ---------------------------

_STEPS = 2000  # virtual machine steps between two looks at the clock (~0.1 ms)
_APPLIED = "budget_timeout_ms"


def _before(conn, _cursor, _statement, _params, context, _many) -> None:
    limit = budget.limit_for(context)
    dbapi = conn.connection.dbapi_connection
    if limit is None:
        if conn.connection.info.pop(_APPLIED, None):
            dbapi.set_progress_handler(None, 0)
        return
    deadline = limit[0]
    if time.monotonic() >= deadline:
        budget.raise_spent(limit[1])
    dbapi.set_progress_handler(lambda: time.monotonic() >= deadline, _STEPS)
    conn.connection.info[_APPLIED] = 1


def _checkin(dbapi_conn, record) -> None:
    if record.info.pop(_APPLIED, None):
        dbapi_conn.set_progress_handler(None, 0)


class SqliteStore(Store):
    name = NAME
    writer_threads = 1  # SQLite takes one writer at a time
    walks_sort_index = True
    timestamps_as_micros = True
    copies_csv = False

    def normalize_url(self, url: URL) -> URL:
        return url

    def create_engine(self, url: URL) -> Engine:
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 5})
        event.listen(engine, "connect", _on_connect)
        budget.install(engine)
        return engine

    def probe(self, conn: Connection) -> None:
        conn.exec_driver_sql("SELECT count(*) FROM sqlite_master")

    def describe_failure(self, url: URL, detail: str) -> str:
        if "locked" in detail:
            return (
                f"The SQLite file {url.database} is locked by another process; "
                "stop the other process or wait and retry."
            )
        return (
            f"Cannot open the SQLite file {url.database} ({detail}); "
            "check that its folder exists and is writable."
        )

    def install_budget(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", _before)
        event.listen(engine.pool, "checkin", _checkin)

    def is_timeout(self, exc: BaseException) -> bool:
        return "interrupted" in str(exc)

    def insert(self, table: Table) -> Insert:
        return sqlite_insert(table)

    def prepare_temp_table(self, conn: Connection, table: Table, like: str) -> None:
        cols = ", ".join(c.name for c in table.columns)
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {table.name} AS SELECT {cols} FROM {like} WHERE 0"
        )
        conn.execute(delete(table))  # a temporary table outlives SQLite's transaction

    def insert_spans(
        self,
        conn: Connection,
        rows: list[dict[str, Any]],
        columns: Sequence[str],
        new: Table | None,
    ) -> int:
        insert = sqlite_insert(spans).on_conflict_do_nothing().returning(spans.c.id)
        ids = [row[0] for row in conn.execute(insert, rows)]
        if new is not None:
            self.prepare_temp_table(conn, new, spans.name)
            if ids:
                # This transaction holds SQLite's write lock: its new ids are one unbroken range.
                names = [c.name for c in new.columns]
                source = select(*(spans.c[c] for c in names)).where(
                    spans.c.id.between(min(ids), max(ids))
                )
                conn.execute(new.insert().from_select(names, source))
        return len(ids)

    def analyze(self, conn: Connection, tables: Iterable[Table]) -> None:
        return None  # the planner keeps no statistics that a rebuild leaves stale

    def xact_lock(self, conn: Connection, key: int) -> None:
        return None  # SQLite already has a single writer at a time

    def org_turns(
        self, engine: Engine, orgs: list[int], wait_s: float
    ) -> AbstractContextManager[None]:
        database = engine.url.database or ""
        in_memory = (
            database in ("", ":memory:")
            or database.startswith("file::memory:")
            or engine.url.query.get("mode") == "memory"  # file:NAME?mode=memory&uri=true
        )
        if in_memory:  # one process's: its own lock is the turn
            return nullcontext()
        return turns.file_turns(turns.turns_folder(database), orgs, wait_s)

    def try_lock(self, conn: Connection, key: int) -> bool:
        return True  # SQLite runs a single worker

    def unlock(self, conn: Connection, key: int) -> None:
        return None

    def claimable(self, candidate: Select) -> Select:
        return candidate  # the claiming UPDATE holds the database's one write lock

    def read_outside_transaction(self, conn: Connection) -> Connection:
        return conn  # pysqlite begins no transaction for a SELECT

    def tune_read(self, conn: Connection, *, by_index: bool) -> None:
        return None

    def index_hint(self, query: Select, table: Table, index: str) -> Select:
        return query.with_hint(table, f"INDEXED BY {index}", NAME)

    def search_needle(self, text: str) -> str:
        return '"' + text.replace('"', '""') + '"'  # an FTS5 phrase: the text taken literally

    def copy_csv_rows(
        self, engine: Engine, org_id: int, ids: list[int], fields: tuple[str, ...]
    ) -> bytes:
        raise NotImplementedError("SQLite does not print CSV; exports write it in Python")

    # -- retention: batched deletes, then an incremental vacuum --------------------------------

    def span_partitions(self, conn: Connection) -> list[SpanPartition] | None:
        return None  # one table; storage/retention.py deletes in batches

    def create_span_partition(self, conn: Connection, month: datetime) -> str:
        raise NotImplementedError("SQLite keeps spans in one table")

    def drop_span_partition(self, conn: Connection, partition: SpanPartition) -> int:
        raise NotImplementedError("SQLite keeps spans in one table")

    def reclaim_space(self, engine: Engine) -> int:
        with engine.connect() as conn:
            if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() != _INCREMENTAL:
                return 0  # freed pages are reused by new spans (space_reclaim_status says so)
            page_size = conn.exec_driver_sql("PRAGMA page_size").scalar()
            before = conn.exec_driver_sql("PRAGMA page_count").scalar()
        left = None
        while True:  # a bounded step at a time, so writers get the database in between
            with engine.begin() as conn:
                free = conn.exec_driver_sql("PRAGMA freelist_count").scalar()
                if not free or free == left:
                    break
                left = free
                conn.exec_driver_sql(f"PRAGMA incremental_vacuum({_VACUUM_PAGES})")
        with engine.connect() as conn:
            after = conn.exec_driver_sql("PRAGMA page_count").scalar()
        return max(0, before - after) * page_size

    def space_reclaim_status(self, engine: Engine) -> str | None:
        with engine.connect() as conn:
            if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == _INCREMENTAL:
                return None
        return (
            "Space of deleted spans is reused by new spans but not returned to the disk. "
            "Stop the server and run `python -m observatory_core retention vacuum` once."
        )

    def enable_space_reclaim(self, engine: Engine) -> str:
        """Switch the file to incremental auto-vacuum with one VACUUM. VACUUM is atomic (an
        interrupted one leaves the file as it was) but rewrites the whole file through a
        temporary copy and holds the database meanwhile, so it runs only from the CLI, with
        the server stopped, and only when the disk has room for the copy."""
        if self.space_reclaim_status(engine) is None:
            return "Nothing to do: deleted spans' space is already returned to the disk."
        path = Path(engine.url.database or "")
        size = sum(
            p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()
        )
        for where in {path.resolve().parent, Path(tempfile.gettempdir())}:
            free = shutil.disk_usage(where).free
            if free < size * 1.2:
                raise UserError(
                    f"VACUUM needs about {size / 1e6:.0f} MB free in {where} for a temporary "
                    f"copy; only {free / 1e6:.0f} MB are free. Free some space and run it again."
                )
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
            conn.exec_driver_sql("VACUUM")
            mode = conn.exec_driver_sql("PRAGMA auto_vacuum").scalar()
        if mode != _INCREMENTAL:
            raise UserError("VACUUM ran but auto_vacuum is still off; is the file read-only?")
        return f"Vacuumed {size / 1e6:.1f} MB: space of deleted spans now goes back to the disk."


STORE = register(SqliteStore())
