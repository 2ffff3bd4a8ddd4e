"""Engines and connections, with failures turned into sentences a person can act on."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from psycopg import pq
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from observatory_core.base.errors import ConfigError, DatabaseUnavailable
from observatory_core.storage import budget
from observatory_core.storage.dialect import (
    PercentileAggregate,
    StddevAggregate,
    sqlite_latency_bin,
)
from observatory_core.storage.packed_sketch import register_sqlite as register_sketch_functions

SUPPORTED = "sqlite:///path/to/file.db or postgresql+psycopg://user:password@host:5432/dbname"


def parse_database_url(raw: str) -> URL:
    """Accept the usual spellings; refuse anything else with the fix in the message."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL {raw!r} is not a database URL; use {SUPPORTED}.") from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        if url.get_driver_name() not in ("psycopg", "psycopg2", None) and "+" in url.drivername:
            raise ConfigError(
                f"DATABASE_URL uses driver {url.drivername!r}; use postgresql+psycopg://..."
            )
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return url
    raise ConfigError(f"DATABASE_URL names {backend!r}, which is not supported; use {SUPPORTED}.")


def _binary_results(_conn, cursor, _statement, _params, context, _many) -> None:
    """`execution_options(binary_results=True)`: rows come back in PostgreSQL's binary format,
    which psycopg loads ~3x faster than text (no number parsing, no hex-decoded bytea); the
    Python values are the same."""
    if context.execution_options.get("binary_results"):
        cursor.format = pq.Format.BINARY


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
    dbapi_conn.create_aggregate("obs_percentile_cont", 2, PercentileAggregate)
    dbapi_conn.create_aggregate("obs_stddev", 1, StddevAggregate)
    dbapi_conn.create_function("obs_latency_bin", 1, sqlite_latency_bin, deterministic=True)
    register_sketch_functions(dbapi_conn)


@lru_cache(maxsize=8)
def get_engine(database_url: str) -> Engine:
    """One engine per URL per process; pools are shared by every caller."""
    url = parse_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 5})
        event.listen(engine, "connect", _sqlite_on_connect)
        budget.install(engine)
        return engine
    # Custom plans always: psycopg prepares a statement on its sixth run, after which PostgreSQL
    # may switch to a generic plan that ignores the values; for a text search over 30 days that
    # plan took 0.4-4.4 s instead of 5 ms. Planning each run costs ~1-2 ms.
    # Sessions in UTC: timestamps come back without a zone conversion per value. No JIT:
    # its compile time (~200 ms) outweighs the gain on queries that read thousands of rows.
    # Ten kept connections: with five, concurrent API clients overflowed the pool, and each
    # overflow connection was closed on return and opened again (a new server process) on the
    # next request. No ping per checkout (a round trip on every request, ~15% of the API's
    # throughput): a connection the server dropped fails one statement, SQLAlchemy then
    # discards every connection older than the failure, and the next request reconnects.
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        connect_args={"options": "-c timezone=UTC -c jit=off -c plan_cache_mode=force_custom_plan"},
    )
    event.listen(engine, "before_cursor_execute", _binary_results)
    budget.install(engine)
    return engine


def describe_failure(url: URL, exc: BaseException) -> str:
    """One sentence for a connection failure: what is wrong and what to do."""
    detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else ""
    if url.get_backend_name() == "sqlite":
        if "locked" in detail:
            return (
                f"The SQLite file {url.database} is locked by another process; "
                "stop the other process or wait and retry."
            )
        return (
            f"Cannot open the SQLite file {url.database} ({detail}); "
            "check that its folder exists and is writable."
        )
    where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    if "does not exist" in detail:
        return (
            f"PostgreSQL at {where} has no such database ({detail}); create it or fix DATABASE_URL."
        )
    if "password" in detail or "authentication" in detail:
        return f"PostgreSQL at {where} refused the login ({detail}); fix the user or password in DATABASE_URL."
    return f"Cannot reach PostgreSQL at {where} ({detail}); start the server or fix DATABASE_URL."


def check_connection(engine: Engine) -> None:
    """Open one connection now, so a bad database fails early with a clear message."""
    try:
        with engine.connect() as conn:
            # Touch the schema, not just the socket: a locked SQLite file fails here.
            conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables"
                    if engine.dialect.name == "postgresql"
                    else "SELECT count(*) FROM sqlite_master"
                )
            )
    except (OperationalError, SQLAlchemyError, OSError) as exc:
        raise DatabaseUnavailable(describe_failure(engine.url, exc)) from exc


def is_unavailable(exc: BaseException) -> bool:
    """True when a failure is the database being down or busy (worth a retry), whether it
    surfaced through SQLAlchemy or straight from the driver (the COPY path)."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    return any(cls.__name__ == "OperationalError" for cls in type(exc).__mro__)
