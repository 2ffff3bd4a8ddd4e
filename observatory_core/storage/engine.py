"""Engines and connections, with failures turned into sentences a person can act on."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from observatory_core.base.errors import ConfigError, DatabaseUnavailable
from observatory_core.storage.stores import store_for

SUPPORTED = "sqlite:///path/to/file.db or postgresql+psycopg://user:password@host:5432/dbname"


def parse_database_url(raw: str) -> URL:
    """Accept the usual spellings; refuse anything else with the fix in the message."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL {raw!r} is not a database URL; use {SUPPORTED}.") from None
    try:
        store = store_for(url)
    except LookupError:
        raise ConfigError(
            f"DATABASE_URL names {url.drivername.split('+')[0]!r}, which is not supported; "
            f"use {SUPPORTED}."
        ) from None
    return store.normalize_url(url)


@lru_cache(maxsize=8)
def get_engine(database_url: str) -> Engine:
    """One engine per URL per process; pools are shared by every caller. Each store sets up
    its own connections (storage/stores/)."""
    url = parse_database_url(database_url)
    return store_for(url).create_engine(url)


def describe_failure(url: URL, exc: BaseException) -> str:
    """One sentence for a connection failure: what is wrong and what to do."""
    detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else ""
    return store_for(url).describe_failure(url, detail)


def check_connection(engine: Engine) -> None:
    """Open one connection now, so a bad database fails early with a clear message."""
    try:
        with engine.connect() as conn:
            # Touch the schema, not just the socket: a locked SQLite file fails here.
            store_for(engine).probe(conn)
    except (OperationalError, SQLAlchemyError, OSError) as exc:
        raise DatabaseUnavailable(describe_failure(engine.url, exc)) from exc


def is_unavailable(exc: BaseException) -> bool:
    """True when a failure is the database being down or busy (worth a retry), whether it
    surfaced through SQLAlchemy or straight from the driver (the COPY path)."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    return any(cls.__name__ == "OperationalError" for cls in type(exc).__mro__)
