"""Bad database settings give one sentence that says what to do."""

import sqlite3

import pytest

from observatory_core.base.errors import ConfigError, DatabaseUnavailable
from observatory_core.storage.engine import check_connection, get_engine


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://root@localhost/x", "not supported"),
        ("postgresql+asyncpg://u@h/db", r"use postgresql\+psycopg"),
    ],
)
def test_wrong_urls_are_refused_with_the_fix(url, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        get_engine(url)
    assert "sqlite:///" in str(info.value) or "psycopg" in str(info.value)


def test_unreachable_postgres_says_start_the_server():
    engine = get_engine("postgresql+psycopg://postgres@127.0.0.1:1/observatory")
    with pytest.raises(DatabaseUnavailable, match="start the server or fix DATABASE_URL"):
        check_connection(engine)


def test_missing_postgres_database_says_create_it(pg_url):
    engine = get_engine(pg_url + "_missing")
    with pytest.raises(DatabaseUnavailable, match="create it or fix DATABASE_URL"):
        check_connection(engine)


def test_locked_sqlite_file_says_another_process_holds_it(tmp_path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t VALUES (1)")
    try:
        with pytest.raises(DatabaseUnavailable, match="locked by another process"):
            check_connection(get_engine(f"sqlite:///{path}"))
    finally:
        holder.close()


def test_postgres_sessions_plan_with_the_values_given(pg_url):
    """A prepared statement's generic plan ignores the values: a 30-day text search went from
    5 ms to seconds once psycopg had prepared it."""
    from observatory_core.storage.engine import get_engine

    with get_engine(pg_url).connect() as conn:
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
        assert conn.exec_driver_sql("SHOW timezone").scalar() == "UTC"
