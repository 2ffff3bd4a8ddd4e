"""The only place that knows SQLite from PostgreSQL in SQL.

Each construct compiles per dialect, so feature modules write one query for both databases.
"""

from __future__ import annotations

import math

from sqlalchemy import Float, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

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
    if conn.dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()
