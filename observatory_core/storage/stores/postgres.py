"""PostgreSQL, the production store: COPY for bulk writes and CSV exports, advisory locks for
writers and periodic jobs, SKIP LOCKED for job claims, `statement_timeout` for time budgets."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import pq
from sqlalchemy import JSON, Boolean, Float, Integer, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Insert, Select

from observatory_core.base.errors import ConfigError
from observatory_core.storage import budget, latency_bins
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
from observatory_core.storage.stores.base import (
    PartitionBusy,
    SpanPartition,
    Store,
    month_start,
)
from observatory_core.storage.types import UtcDateTime

NAME = "postgresql"
_PARTITION = re.compile(r"spans_p(\d{4})_(\d{2})")  # migration 0017's monthly partitions
# How long a partition change waits for the span table before giving up until the next run:
# while it waits, new readers and writers queue behind it.
_PARTITION_LOCK_WAIT = "2s"

# -- the neutral constructs, compiled for PostgreSQL -----------------------------------------


@compiles(percentile_cont, NAME)
def _percentile(element, compiler, **kw):
    (column,) = element.clauses
    return (
        f"percentile_cont({element.fraction!r}) WITHIN GROUP "
        f"(ORDER BY {compiler.process(column, **kw)})"
    )


@compiles(time_bucket, NAME)
def _bucket(element, compiler, **kw):
    (column,) = element.clauses
    return (
        f"date_bin(interval '{element.seconds} seconds', {compiler.process(column, **kw)}, "
        "timestamptz '1970-01-01 00:00:00+00')"
    )


_TRUNC_UNITS = {60: "minute", 3600: "hour", 86_400: "day", 7 * 86_400: "week"}


@compiles(zoned_bucket, NAME)
def _zoned_bucket(element, compiler, **kw):
    """PostgreSQL knows the zones: `date_trunc` in the zone (a local day, ISO week from Monday,
    hour), or `date_bin` on the local clock for other widths."""
    (column,) = element.clauses
    value = compiler.process(column, **kw)
    zone = element.bucketing.zone.name.replace("'", "''")  # a checked IANA name
    seconds = element.bucketing.seconds
    if seconds in _TRUNC_UNITS:
        return f"date_trunc('{_TRUNC_UNITS[seconds]}', {value}, '{zone}')"
    return (
        f"(date_bin(interval '{seconds} seconds', ({value}) AT TIME ZONE '{zone}', "
        f"timestamp '2000-01-03 00:00:00') AT TIME ZONE '{zone}')"
    )


@compiles(stddev_samp, NAME)
def _stddev(element, compiler, **kw):
    return f"stddev_samp({compiler.process(element.clauses, **kw)})"


@compiles(json_array_contains, NAME)
def _array_contains(element, compiler, **kw):
    column, value = element.clauses
    return f"({compiler.process(column, **kw)} @> jsonb_build_array(CAST({compiler.process(value, **kw)} AS text)))"


@compiles(json_object_text, NAME)
def _object_text(element, compiler, **kw):
    column, key = element.clauses
    return f"({compiler.process(column, **kw)} ->> CAST({compiler.process(key, **kw)} AS text))"


@compiles(json_tag_value, NAME)
def _tag_value(element, compiler, **kw):
    """The first tag (in array order) starting with "<key>:", without the prefix: a JSON path
    (about 2.7x faster than unnesting the array, bench/dims_case.py). The key is plain
    (`KEY_PATTERN`), so it sits in the path's string literal as it is."""
    column = compiler.process(element.clauses, **kw)
    n = len(element.key) + 1
    path = f'$[*] ? (@ starts with "{element.key}:")'
    return f"substr(jsonb_path_query_first({column}, '{path}') #>> '{{}}', {n + 1})"


@compiles(text_search, NAME)
def _search(element, compiler, **kw):
    """ILIKE with escaped wildcards (`search_needle`), served by the pg_trgm GIN indexes."""
    _id, inp, out, needle = (compiler.process(c, **kw) for c in element.clauses)
    return f"({inp} ILIKE {needle} ESCAPE '\\' OR {out} ILIKE {needle} ESCAPE '\\')"


@compiles(latency_bin, NAME)
def _latency_bin(element, compiler, **kw):
    (column,) = element.clauses
    d = compiler.process(column, **kw)
    floor, top = latency_bins.ABSOLUTE_FLOOR_MS, latency_bins.LAST_EDGE_MS
    last = latency_bins.BINS - 1
    return (
        # NULL for NULL, as elsewhere: GREATEST(1, NULL) is 1
        f"(CASE WHEN {d} IS NULL THEN NULL WHEN {d} <= {floor!r} THEN 0 "
        f"WHEN {d} > {top!r} THEN {last} "
        f"ELSE LEAST({last - 1}, GREATEST(1, "
        f"CAST(ceil(ln({d} / {floor!r}) / ln({latency_bins.GAMMA!r}) - 1e-12) AS INTEGER))) END)"
    )


@compiles(nano_dollars, NAME)
def _nano_dollars(element, compiler, **kw):
    return f"CAST(round(CAST({compiler.process(element.clauses, **kw)} AS NUMERIC), 9) AS DOUBLE PRECISION)"


@compiles(least_of, NAME)
def _least(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"LEAST({a}, {b})"


@compiles(greatest_of, NAME)
def _greatest(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"GREATEST({a}, {b})"


@compiles(arrival_order, NAME)
def _arrival(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)  # the id: it grows with each insert


@compiles(epoch_us, NAME)
def _epoch_us(element, compiler, **kw):
    return (
        f"CAST(extract(epoch FROM {compiler.process(element.clauses, **kw)}) * 1000000 AS BIGINT)"
    )


# Sketches (storage/packed_sketch.py): bytea, merged by `string_agg` (concatenation) and
# compacted by `obs_sketch_compact`, an SQL function created by migration 0015. A span's record
# is `int4send(bin * 65536 + 1)`: the four big-endian bytes of `bin << 16 | 1`.
_EMPTY = "''::bytea"


@compiles(sketch_of, NAME)
def _sketch_of(element, compiler, **kw):
    bin_ = compiler.process(element.clauses, **kw)
    return (
        f"obs_sketch_compact(coalesce(string_agg(int4send(({bin_}) * 65536 + 1), {_EMPTY}), "
        f"{_EMPTY}))"
    )


@compiles(sketch_merge, NAME)
def _sketch_merge(element, compiler, **kw):
    return f"coalesce(string_agg({compiler.process(element.clauses, **kw)}, {_EMPTY}), {_EMPTY})"


@compiles(sketch_compact, NAME)
def _sketch_compact(element, compiler, **kw):
    return f"obs_sketch_compact({compiler.process(element.clauses, **kw)})"


@compiles(sketch_add, NAME)
def _sketch_add(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"obs_sketch_compact({a} || {b})"


# -- connections -------------------------------------------------------------------------------


def _binary_results(_conn, cursor, _statement, _params, context, _many) -> None:
    """`execution_options(binary_results=True)`: rows come back in PostgreSQL's binary format,
    which psycopg loads ~3x faster than text (no number parsing, no hex-decoded bytea); the
    Python values are the same."""
    if context.execution_options.get("binary_results"):
        cursor.format = pq.Format.BINARY


# -- time budgets: statement_timeout -----------------------------------------------------------

# Re-send the timeout only when the time left has shrunk by more than this, so a request of
# many quick statements pays one extra round trip, not one per statement.
_SLACK_MS = 250
_APPLIED = "budget_timeout_ms"
_SESSION = "budget_session_level"


def _before(conn, _cursor, _statement, _params, context, _many) -> None:
    fairy = conn.connection
    dbapi, info = fairy.dbapi_connection, fairy.info
    if not dbapi.autocommit and dbapi.info.transaction_status == pq.TransactionStatus.IDLE:
        info.pop(_APPLIED, None)  # a SET LOCAL ended with its transaction
    limit = budget.limit_for(context)
    if limit is None:
        if info.get(_APPLIED):
            _set_timeout(fairy, 0)
        return
    left = limit[0] - time.monotonic()
    if left <= 0:
        budget.raise_spent(limit[1])
    ms = max(1, int(left * 1000))
    applied = info.get(_APPLIED)
    if applied and applied - ms < _SLACK_MS:
        return
    _set_timeout(fairy, ms)


def _set_timeout(fairy, ms: int) -> None:
    """`SET LOCAL` inside a transaction (undone by its end); for the session on autocommit."""
    dbapi = fairy.dbapi_connection
    local = "false" if dbapi.autocommit else "true"
    dbapi.execute(f"SELECT set_config('statement_timeout', '{int(ms)}', {local})")
    if dbapi.autocommit:
        fairy.info[_SESSION] = bool(ms)
    if ms:
        fairy.info[_APPLIED] = ms
    else:
        fairy.info.pop(_APPLIED, None)


def _checkin(dbapi_conn, record) -> None:
    """A session-level timeout (set on an autocommit connection) must not outlive its request."""
    record.info.pop(_APPLIED, None)
    if not record.info.pop(_SESSION, False) or dbapi_conn is None:
        return
    try:
        dbapi_conn.execute("SET statement_timeout = 0")
        if not dbapi_conn.autocommit:
            dbapi_conn.commit()
    except Exception:  # a broken connection is discarded by the pool anyway
        record.invalidate()


# -- COPY ------------------------------------------------------------------------------------


def _csv_expression(field: str) -> str:
    """Each column printed exactly as `exports.writers.csv_text` writes it, so a CSV file reads
    the same whichever path wrote it."""
    column = spans.c[field]
    name = f'"{field}"'
    kind = column.type
    if isinstance(kind, UtcDateTime):
        return f"""to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
    if isinstance(kind, Boolean | Float | JSON):
        return f"{name}::text"  # true/false; shortest round-trip floats; compact JSON
    if isinstance(kind, Integer):
        return name
    return f"NULLIF({name}, '')"


class PostgresStore(Store):
    name = NAME
    # Two writers, so one group's COPY overlaps the other's rollup fold (the fold itself
    # takes turns under an advisory lock).
    writer_threads = 2
    walks_sort_index = False
    timestamps_as_micros = False
    copies_csv = True

    def normalize_url(self, url: URL) -> URL:
        if url.get_driver_name() not in ("psycopg", "psycopg2", None) and "+" in url.drivername:
            raise ConfigError(
                f"DATABASE_URL uses driver {url.drivername!r}; use postgresql+psycopg://..."
            )
        return url.set(drivername="postgresql+psycopg")

    def create_engine(self, url: URL) -> Engine:
        # Custom plans always: psycopg prepares a statement on its sixth run, after which
        # PostgreSQL may switch to a generic plan that ignores the values; for a text search
        # over 30 days that plan took 0.4-4.4 s instead of 5 ms. Planning each run costs
        # ~1-2 ms. Sessions in UTC: timestamps come back without a zone conversion per value.
        # No JIT: its compile time (~200 ms) outweighs the gain on queries that read thousands
        # of rows. Ten kept connections: with five, concurrent API clients overflowed the pool,
        # and each overflow connection was closed on return and opened again (a new server
        # process) on the next request. No ping per checkout (a round trip on every request,
        # ~15% of the API's throughput): a connection the server dropped fails one statement,
        # SQLAlchemy then discards every connection older than the failure, and the next
        # request reconnects.
        engine = create_engine(
            url,
            pool_size=10,
            max_overflow=20,
            connect_args={
                "options": "-c timezone=UTC -c jit=off -c plan_cache_mode=force_custom_plan"
            },
        )
        event.listen(engine, "before_cursor_execute", _binary_results)
        budget.install(engine)
        return engine

    def probe(self, conn: Connection) -> None:
        conn.exec_driver_sql("SELECT count(*) FROM information_schema.tables")

    def describe_failure(self, url: URL, detail: str) -> str:
        where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
        if "does not exist" in detail:
            return f"PostgreSQL at {where} has no such database ({detail}); create it or fix DATABASE_URL."
        if "password" in detail or "authentication" in detail:
            return f"PostgreSQL at {where} refused the login ({detail}); fix the user or password in DATABASE_URL."
        return (
            f"Cannot reach PostgreSQL at {where} ({detail}); start the server or fix DATABASE_URL."
        )

    def install_budget(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", _before)
        event.listen(engine.pool, "checkin", _checkin)

    def is_timeout(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == "57014"  # query_canceled

    def insert(self, table: Table) -> Insert:
        return pg_insert(table)

    def prepare_temp_table(self, conn: Connection, table: Table, like: str) -> None:
        cols = ", ".join(c.name for c in table.columns)
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {table.name} ON COMMIT DELETE ROWS AS "
            f"SELECT {cols} FROM {like} WITH NO DATA"
        )
        conn.exec_driver_sql(f"DELETE FROM {table.name}")

    def insert_spans(
        self,
        conn: Connection,
        rows: list[dict[str, Any]],
        columns: Sequence[str],
        new: Table | None,
    ) -> int:
        """COPY into a staging table, then one INSERT ... ON CONFLICT DO NOTHING from it."""
        cols = ", ".join(f'"{c}"' for c in columns)
        as_json = {c for c in columns if isinstance(spans.c[c].type, JSON)}
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            # Once per connection: the span columns without id or constraints, emptied on commit.
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS spans_staging ON COMMIT DELETE ROWS AS "
                f"SELECT {cols} FROM spans WITH NO DATA"
            )
            with cur.copy(f"COPY spans_staging ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(
                        [json.dumps(row[c]) if c in as_json else row[c] for c in columns]
                    )
        # The span key of the partitioned table holds start_time (migration 0017), so a span
        # re-sent with the same ids is skipped by the anti-join whatever its start time, and
        # by ON CONFLICT (no target: any key) when two writers send it at once.
        insert = (
            f"INSERT INTO spans ({cols}) SELECT DISTINCT ON (org_id, trace_id, span_id) {cols} "
            "FROM spans_staging s WHERE NOT EXISTS (SELECT 1 FROM spans t WHERE "
            "t.org_id = s.org_id AND t.trace_id = s.trace_id AND t.span_id = s.span_id) "
            "ON CONFLICT DO NOTHING"
        )
        if new is not None:
            self.prepare_temp_table(conn, new, spans.name)
            new_cols = ", ".join(c.name for c in new.columns)
            # Only the spans really inserted (not re-sent ones) go on to `new`.
            insert = (
                f"WITH ins AS ({insert} RETURNING {new_cols}) "
                f"INSERT INTO {new.name} ({new_cols}) SELECT {new_cols} FROM ins"
            )
        with raw.cursor() as cur:
            cur.execute(insert)
            return cur.rowcount

    def analyze(self, conn: Connection, tables: Iterable[Table]) -> None:
        for table in tables:
            conn.exec_driver_sql(f"ANALYZE {table.name}")

    def xact_lock(self, conn: Connection, key: int) -> None:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(key)})")

    def org_turns(
        self, engine: Engine, orgs: list[int], wait_s: float
    ) -> AbstractContextManager[None]:
        return turns.advisory_turns(engine, orgs, wait_s)

    def try_lock(self, conn: Connection, key: int) -> bool:
        return bool(conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({int(key)})").scalar())

    def unlock(self, conn: Connection, key: int) -> None:
        conn.exec_driver_sql(f"SELECT pg_advisory_unlock({int(key)})")

    def claimable(self, candidate: Select) -> Select:
        return candidate.with_for_update(skip_locked=True)

    def read_outside_transaction(self, conn: Connection) -> Connection:
        # one round trip per read instead of three (BEGIN, SELECT, ROLLBACK)
        return conn.execution_options(isolation_level="AUTOCOMMIT")

    def tune_read(self, conn: Connection, *, by_index: bool) -> None:
        # Merging rollup rows: with the default 4 MB the grouping of a 30-day hourly series
        # spilled to disk. `by_index`: read rollup rows through their (org, time) index even
        # when a range covers most of a table: a sequential scan of a table over a quarter of
        # shared_buffers goes through a small ring of buffers, so the rows were read from the
        # OS again on every query (+20-30 ms for 30 days of hours).
        conn.exec_driver_sql(
            "SELECT set_config('work_mem', '64MB', true), "
            f"set_config('enable_seqscan', '{'off' if by_index else 'on'}', true)"
        )

    def index_hint(self, query: Select, table: Table, index: str) -> Select:
        return query  # the planner picks indexes itself

    def search_needle(self, text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return "%" + escaped + "%"

    def copy_csv_rows(
        self, engine: Engine, org_id: int, ids: list[int], fields: tuple[str, ...]
    ) -> bytes:
        """Only integers (org and span ids) enter the COPY statement; the filter was applied
        when the ids were chosen, with bound parameters."""
        if not ids:
            return b""
        if not all(isinstance(i, int) for i in ids) or not isinstance(org_id, int):
            raise TypeError("COPY pages take integer ids only")
        columns = ", ".join(_csv_expression(f) for f in fields)
        id_list = ",".join(map(str, ids))
        sql = (
            f"COPY (SELECT {columns} FROM spans WHERE org_id = {org_id} "
            f"AND id = ANY('{{{id_list}}}'::bigint[]) ORDER BY start_time, id) TO STDOUT (FORMAT csv)"
        )
        out = bytearray()
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(sql) as copy:
                for chunk in copy:
                    out += chunk
        return bytes(out)

    # -- retention: monthly span partitions (migration 0017) --------------------------------

    def span_partitions(self, conn: Connection) -> list[SpanPartition] | None:
        kind = conn.exec_driver_sql(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass('spans')"
        ).scalar()
        if kind != "p":
            return None
        names = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'spans'::regclass"
        ).scalars()
        found = []
        for name in names:
            match = _PARTITION.fullmatch(name)
            if match:
                start = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
                found.append(SpanPartition(name, start, month_start(start + timedelta(days=32))))
        return sorted(found, key=lambda p: p.start)

    def create_span_partition(self, conn: Connection, month: datetime) -> str:
        start = month_start(month)
        end = month_start(start + timedelta(days=32))
        name = f"spans_p{start:%Y_%m}"
        bounds = f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        inside = f"start_time >= '{start.isoformat()}' AND start_time < '{end.isoformat()}'"
        with _briefly(conn, name):
            has_default = conn.exec_driver_sql(
                "SELECT to_regclass('spans_default') IS NOT NULL"
            ).scalar()
            if has_default:  # no span of the month may land there between look and create
                conn.exec_driver_sql("LOCK TABLE spans_default IN EXCLUSIVE MODE")
            stray = (
                has_default
                and conn.exec_driver_sql(
                    f"SELECT EXISTS (SELECT 1 FROM spans_default WHERE {inside})"
                ).scalar()
            )
            if stray:  # spans of a month not yet made wait in the default partition
                conn.exec_driver_sql(
                    f"CREATE TABLE {name} (LIKE spans INCLUDING DEFAULTS INCLUDING STORAGE)"
                )
                conn.exec_driver_sql(
                    f"WITH moved AS (DELETE FROM spans_default WHERE {inside} RETURNING *) "
                    f"INSERT INTO {name} SELECT * FROM moved"
                )
                conn.exec_driver_sql(f"ALTER TABLE spans ATTACH PARTITION {name} {bounds}")
            else:
                conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF spans {bounds}")
        return name

    def drop_span_partition(self, conn: Connection, partition: SpanPartition) -> int:
        if not _PARTITION.fullmatch(partition.name):
            raise ValueError(f"not a span partition: {partition.name!r}")
        with _briefly(conn, partition.name):
            size = conn.exec_driver_sql(
                f"SELECT pg_total_relation_size('{partition.name}'::regclass)"
            ).scalar()
            conn.exec_driver_sql(f"ALTER TABLE spans DETACH PARTITION {partition.name}")
            conn.exec_driver_sql(f"DROP TABLE {partition.name}")
        return int(size or 0)

    def reclaim_space(self, engine: Engine) -> int:
        return 0  # dropped partitions return theirs at once; deleted rows' space is reused

    def space_reclaim_status(self, engine: Engine) -> str | None:
        with engine.connect() as conn:
            if self.span_partitions(conn) is not None:
                return None
        return "Spans are not partitioned yet: run `python -m observatory_core migrate`."

    def enable_space_reclaim(self, engine: Engine) -> str:
        status = self.space_reclaim_status(engine)
        return status or "Nothing to do: spans are partitioned by month and dropped whole."


class _briefly:
    """Within the caller's transaction: wait at most `_PARTITION_LOCK_WAIT` for a lock, and
    turn a lock not granted in time into `PartitionBusy` (the transaction rolls back)."""

    def __init__(self, conn: Connection, name: str) -> None:
        self.conn, self.name = conn, name

    def __enter__(self) -> None:
        self.conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_PARTITION_LOCK_WAIT}'")

    def __exit__(self, kind, exc, _tb) -> bool:
        if isinstance(exc, OperationalError) and getattr(exc.orig, "sqlstate", None) == "55P03":
            raise PartitionBusy(f"{self.name}: the span table was busy; retried next run") from exc
        if exc is None:
            self.conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
        return False


STORE = register(PostgresStore())
