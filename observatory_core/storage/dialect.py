"""The only place that knows SQLite from PostgreSQL in SQL.

Each construct compiles per dialect, so feature modules write one query for both databases.
"""

from __future__ import annotations

import math

from sqlalchemy import BigInteger, Boolean, Float, Integer, String, Table, literal
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from observatory_core.metrics import sketch
from observatory_core.storage.types import UtcDateTime


class percentile_cont(FunctionElement):
    """Exact continuous percentile (linear interpolation), like PostgreSQL's percentile_cont."""

    type = Float()
    inherit_cache = True
    name = "percentile_cont"
    # The fraction is rendered into the SQL, so it must be part of the statement cache key.
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("fraction", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, column: ColumnElement, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("a percentile fraction lies between 0 and 1")
        self.fraction = float(fraction)
        super().__init__(column)


@compiles(percentile_cont, "postgresql")
def _pg_percentile(element, compiler, **kw):
    (column,) = element.clauses
    return (
        f"percentile_cont({element.fraction!r}) WITHIN GROUP "
        f"(ORDER BY {compiler.process(column, **kw)})"
    )


@compiles(percentile_cont, "sqlite")
def _sqlite_percentile(element, compiler, **kw):
    (column,) = element.clauses
    return f"obs_percentile_cont({compiler.process(column, **kw)}, {element.fraction!r})"


class time_bucket(FunctionElement):
    """Start of the fixed-width bucket (in seconds, aligned to the epoch) holding a timestamp."""

    type = UtcDateTime()
    inherit_cache = True
    name = "time_bucket"
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("seconds", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, column: ColumnElement, seconds: int) -> None:
        self.seconds = int(seconds)
        super().__init__(column)


@compiles(time_bucket, "postgresql")
def _pg_bucket(element, compiler, **kw):
    (column,) = element.clauses
    return (
        f"date_bin(interval '{element.seconds} seconds', {compiler.process(column, **kw)}, "
        "timestamptz '1970-01-01 00:00:00+00')"
    )


@compiles(time_bucket, "sqlite")
def _sqlite_bucket(element, compiler, **kw):
    (column,) = element.clauses
    width = element.seconds * 1_000_000
    return f"(({compiler.process(column, **kw)} / {width}) * {width})"


class PercentileAggregate:
    """SQLite aggregate behind `obs_percentile_cont`: exact, same interpolation as PostgreSQL."""

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
    """SQLite aggregate behind `obs_stddev`: the sample standard deviation (Welford's method)."""

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


class stddev_samp(FunctionElement):
    """Sample standard deviation (NULL below two values), the same on both databases."""

    type = Float()
    inherit_cache = True
    name = "stddev_samp"


@compiles(stddev_samp, "postgresql")
def _pg_stddev(element, compiler, **kw):
    return f"stddev_samp({compiler.process(element.clauses, **kw)})"


@compiles(stddev_samp, "sqlite")
def _sqlite_stddev(element, compiler, **kw):
    return f"obs_stddev({compiler.process(element.clauses, **kw)})"


def interpolated_percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def insert_ignoring_duplicates(conn: Connection, table: Table):
    """An INSERT that skips rows whose unique key exists, so re-sent spans never duplicate."""
    return upsert(conn, table).on_conflict_do_nothing()


class json_array_contains(FunctionElement):
    """True when a JSON array column holds `value` (a string)."""

    type = Boolean()
    inherit_cache = True
    name = "json_array_contains"

    def __init__(self, column: ColumnElement, value: str) -> None:
        super().__init__(column, literal(value, String()))


@compiles(json_array_contains, "postgresql")
def _pg_array_contains(element, compiler, **kw):
    column, value = element.clauses
    return f"({compiler.process(column, **kw)} @> jsonb_build_array(CAST({compiler.process(value, **kw)} AS text)))"


@compiles(json_array_contains, "sqlite")
def _sqlite_array_contains(element, compiler, **kw):
    column, value = element.clauses
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.value = {compiler.process(value, **kw)})"
    )


class json_object_text(FunctionElement):
    """The text of one top-level key of a JSON object column (any key, quotes included)."""

    type = String()
    inherit_cache = True
    name = "json_object_text"

    def __init__(self, column: ColumnElement, key: str) -> None:
        super().__init__(column, literal(key, String()))


@compiles(json_object_text, "postgresql")
def _pg_object_text(element, compiler, **kw):
    column, key = element.clauses
    return f"({compiler.process(column, **kw)} ->> CAST({compiler.process(key, **kw)} AS text))"


@compiles(json_object_text, "sqlite")
def _sqlite_object_text(element, compiler, **kw):
    column, key = element.clauses
    return (
        f"(SELECT CAST(json_each.value AS TEXT) FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.key = {compiler.process(key, **kw)})"
    )


class text_search(FunctionElement):
    """Case-insensitive substring search over input and output text, through an index.

    SQLite: the FTS5 trigram table `spans_fts` (a quoted phrase, so the text is a literal).
    PostgreSQL: ILIKE with escaped wildcards, served by the pg_trgm GIN indexes.
    """

    type = Boolean()
    inherit_cache = True
    name = "text_search"

    def __init__(self, id_column, input_column, output_column, query: str, dialect: str) -> None:
        if dialect == "sqlite":
            needle = '"' + query.replace('"', '""') + '"'
        else:
            needle = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        super().__init__(id_column, input_column, output_column, literal(needle, String()))


@compiles(text_search, "postgresql")
def _pg_search(element, compiler, **kw):
    _id, inp, out, needle = (compiler.process(c, **kw) for c in element.clauses)
    return f"({inp} ILIKE {needle} ESCAPE '\\' OR {out} ILIKE {needle} ESCAPE '\\')"


@compiles(text_search, "sqlite")
def _sqlite_search(element, compiler, **kw):
    span_id, _inp, _out, needle = (compiler.process(c, **kw) for c in element.clauses)
    return f"({span_id} IN (SELECT rowid FROM spans_fts WHERE spans_fts MATCH {needle}))"


class latency_bin(FunctionElement):
    """The latency sketch bin of a duration in ms (see metrics/sketch.py for the bins)."""

    type = Integer()
    inherit_cache = True
    name = "latency_bin"


@compiles(latency_bin, "postgresql")
def _pg_latency_bin(element, compiler, **kw):
    (column,) = element.clauses
    d = compiler.process(column, **kw)
    floor = sketch.ABSOLUTE_FLOOR_MS
    return (
        f"(CASE WHEN {d} <= {floor!r} THEN 0 ELSE LEAST({sketch.BINS - 1}, GREATEST(1, "
        f"CAST(ceil(ln({d} / {floor!r}) / ln({sketch.GAMMA!r}) - 1e-12) AS INTEGER))) END)"
    )


@compiles(latency_bin, "sqlite")
def _sqlite_latency_bin(element, compiler, **kw):
    (column,) = element.clauses
    return f"obs_latency_bin({compiler.process(column, **kw)})"


def sqlite_latency_bin(value):
    """The Python side of `obs_latency_bin`, registered on every SQLite connection."""
    return None if value is None else sketch.bin_of(value)


class least_of(FunctionElement):
    """The smaller of two values, ignoring a NULL (SQLite's scalar min() would return NULL)."""

    type = Float()
    inherit_cache = True
    name = "least_of"
    functions = {"postgresql": "LEAST", "sqlite": "min"}


class greatest_of(FunctionElement):
    """The larger of two values, ignoring a NULL."""

    type = Float()
    inherit_cache = True
    name = "greatest_of"
    functions = {"postgresql": "GREATEST", "sqlite": "max"}


@compiles(least_of, "postgresql")
@compiles(greatest_of, "postgresql")
def _pg_extreme(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"{element.functions['postgresql']}({a}, {b})"


@compiles(least_of, "sqlite")
@compiles(greatest_of, "sqlite")
def _sqlite_extreme(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"coalesce({element.functions['sqlite']}({a}, {b}), {a}, {b})"


def upsert(conn: Connection, table: Table):
    """INSERT ... ON CONFLICT for the connection's database (rollups add into existing rows)."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


class epoch_us(FunctionElement):
    """A timestamp as integer microseconds since the epoch: a column polars converts in one
    step, where per-value datetime objects cost ~6 us each to build and normalise."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_us"


@compiles(epoch_us, "postgresql")
def _pg_epoch_us(element, compiler, **kw):
    return (
        f"CAST(extract(epoch FROM {compiler.process(element.clauses, **kw)}) * 1000000 AS BIGINT)"
    )


@compiles(epoch_us, "sqlite")
def _sqlite_epoch_us(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)  # stored as microseconds already


# Any fixed number: the lock only has to be the same one in every writer process.
_ROLLUP_LOCK = 7_411_001


def serialize_rollup_writes(conn: Connection) -> None:
    """Writers fold into shared rollup rows in no fixed order, so two concurrent writers could
    deadlock; on PostgreSQL they take turns for the fold (until commit). SQLite already has a
    single writer at a time."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ROLLUP_LOCK})")


def try_lock(conn: Connection, key: int) -> bool:
    """Take a session lock so only one process does a periodic job at a time (PostgreSQL);
    SQLite runs a single worker, so the answer there is always yes."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({int(key)})").scalar())


def unlock(conn: Connection, key: int) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_unlock({int(key)})")


def _sqlite_from_hint(self, table, text):
    """`select().with_hint(table, "INDEXED BY ix", "sqlite")` writes SQLite's INDEXED BY after
    the table name (SQLAlchemy's SQLite compiler drops table hints; MySQL's writes them so)."""
    return text


SQLiteCompiler.get_from_hint_text = _sqlite_from_hint
