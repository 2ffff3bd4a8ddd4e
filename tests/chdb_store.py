"""One chDB folder per test session (per xdist worker), shared by every test package.

chDB runs one folder per process, and opening one costs about a second: each test module used
to open (and close) a folder of its own. Here the folder is opened once, and a module gets a
span store on a ClickHouse database of its own in it (`chdb_session.store("name")`), so
modules never see each other's rows. Registered from tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from observatory_core.storage.clickhouse.connect import SpanStore, open_span_store


class ChdbSession:
    """The session's chDB folder: `store(name)` opens a span store on a fresh database in it.

    One store stays open on `keeper` for the whole session, so the engine keeps the folder
    while modules open and close theirs. Its schema, applied by `open_span_store` as a
    deployment's is, is the template of every store `store` makes: their tables are created
    as `keeper` holds them now (about 15 statements, not every migration's 50)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._numbers = itertools.count(1)
        self._keeper = open_span_store(self.url("keeper"))
        self._tables = self._keeper.client.query(
            "SELECT create_table_query FROM system.tables WHERE database = 'keeper' "
            "ORDER BY engine LIKE '%View', name"  # the views' target tables first
        ).result_rows

    def url(self, database: str) -> str:
        return f"chdb://{self.folder}?database={database}"

    def fresh_name(self, hint: str) -> str:
        """A database name no other caller of this session got (`hint` made a plain
        identifier)."""
        plain = re.sub(r"\W+", "_", hint).strip("_")[:40] or "db"
        return f"t{next(self._numbers)}_{plain}"

    def store(self, hint: str = "db") -> SpanStore:
        """An empty span store (schema applied) on a database of its own: `keeper`'s tables
        and recorded versions copied, then opened by `open_span_store` (which finds the
        schema current, and checks its layout)."""
        name = self.fresh_name(hint)
        client = self._keeper.client
        client.command(f"CREATE DATABASE {name}")
        for (create,) in self._tables:
            client.command(re.sub(r"\bkeeper\.", f"{name}.", create))
        client.command(f"INSERT INTO {name}.schema_versions SELECT * FROM keeper.schema_versions")
        return open_span_store(self.url(name))

    def drop(self, store: SpanStore) -> None:
        """Drop the store's database and close its client (the folder stays open)."""
        try:
            store.client.command(f"DROP DATABASE IF EXISTS {store.database} SYNC")
        finally:
            store.close()

    def close(self) -> None:
        self._keeper.close()


@pytest.fixture(scope="session")
def chdb_session(tmp_path_factory) -> Iterator[ChdbSession]:
    session = ChdbSession(tmp_path_factory.mktemp("chdb") / "data")
    yield session
    session.close()


@pytest.fixture(scope="module")
def chdb_store(chdb_session, request) -> Iterator[SpanStore]:
    """An empty span store (schema applied) on a database of the module's own."""
    store = chdb_session.store(request.module.__name__.rsplit(".", 1)[-1])
    yield store
    chdb_session.drop(store)


def copy_into_span_store(session: ChdbSession, engine, hint: str) -> SpanStore:
    """A span store holding every span of `engine`'s database (SQLite or PostgreSQL), copied
    by `migrate-spans` as a deployment would copy them."""
    from observatory_core.storage.clickhouse import migrate_spans as mig

    store = session.store(hint)
    mig.migrate_spans(engine, store, org_ids=list(mig.source_orgs(engine)), batch=20_000)
    return store


def with_store_ids(df: pl.DataFrame, store: SpanStore) -> pl.DataFrame:
    """`df` (raw rows of the source) with each span's `id` as the span store gives it (a hash
    of its identity, storage/stores/clickhouse.py): references then compare ids as they are."""
    from observatory_core.storage.stores.clickhouse import SPAN_ID_SQL

    rows = store.client.query(
        f"SELECT org_id, trace_id, span_id, {SPAN_ID_SQL.format(t='')} FROM {store.table('spans')}"
    ).result_rows
    keys = ["org_id", "trace_id", "span_id"]
    ids = pl.DataFrame(rows, schema=[*keys, "store_id"], orient="row").with_columns(
        pl.col("org_id").cast(df.schema["org_id"]), pl.col("store_id").cast(pl.Int64)
    )
    out = df.join(ids, on=keys, how="left").with_columns(pl.col("store_id").alias("id"))
    assert out["id"].null_count() == 0, "a span of the source is missing from the span store"
    return out.drop("store_id").select(df.columns)


def write_later_copy(store: SpanStore, rows: list[dict]) -> None:
    """Insert `rows` (spans already stored, some fields changed) as a racing writer in another
    process would: a second copy of each span, with a later version (`write_spans` skips
    stored spans, so only this makes copies), then fold the copies as schema version 7 and
    `clickhouse-fold-copies` do: the newest copy is the span the reads find."""
    import time

    from observatory_core.storage.clickhouse import layout
    from observatory_core.storage.clickhouse.fold_copies import fold_copies
    from observatory_core.storage.clickhouse.writes import as_columns

    names = layout.span_column_names()
    store.client.insert(
        store.table("spans"),
        as_columns(rows, names, time.time_ns() // 1000, lambda org, project: 0),
        column_names=list(names),
        column_oriented=True,
    )
    fold_copies(store)
