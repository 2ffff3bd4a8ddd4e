"""The ClickHouse span store's tests run on chDB, the same engine in this process: one folder
per test session, a database of each module's own in it (`chdb_store`, tests/chdb_store.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from observatory_core.demo.catalog import ORGS
from observatory_core.demo.generator import DemoGenerator
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import complete_row

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# (org slug, project slug) -> (org id, project id): every demo org and project
IDS = {
    (org.slug, project.slug): (i, 100 * i + j)
    for i, org in enumerate(ORGS, start=1)
    for j, project in enumerate(org.projects)
}


def demo_rows(count: int, *, seed: int = 7, days: float = 14) -> list[dict]:
    """Canonical span rows as the write path gets them (`complete_row`), of every demo org."""
    generator = DemoGenerator(ids=IDS, end=END, days=days, seed=seed, prices=PriceBook({}))
    return [complete_row(row, 16_000) for row in generator.spans(count)]


def store_at_version(chdb_session, hint: str, version: int):
    """A span store on a fresh database whose schema stopped at `version` (the migrations up to
    it applied and recorded, none after): what an older release left, for upgrade tests.
    Answers (url, store); the store is open without the newer versions."""
    from observatory_core.storage.clickhouse import ddl
    from observatory_core.storage.clickhouse.connect import open_span_store

    url = chdb_session.url(chdb_session.fresh_name(hint))
    store = open_span_store(url, apply_schema=False)
    naming = ddl.Naming(store.database)
    store.client.command(f"CREATE DATABASE IF NOT EXISTS {store.database}")
    store.client.command(ddl._versions_table(naming))
    for migration in ddl.MIGRATIONS[:version]:
        for statement in migration.statements(naming):
            store.client.command(statement)
        store.client.insert(
            store.table("schema_versions"),
            [[migration.version, migration.name, datetime.now(UTC)]],
            column_names=["version", "name", "applied_at"],
        )
    return url, store


@contextmanager
def written_ago(hours: float = 1.0) -> Iterator[None]:
    """`write_spans` stamps the rows it writes `hours` ago (their `version`): an insert long
    finished, whose spans a resend may top up (`view_gaps.SETTLE`)."""
    from observatory_core.storage.clickhouse import writes

    real = time.time_ns
    shift = int(hours * 3600 * 1e9)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writes.time, "time_ns", lambda: real() - shift)
        yield
