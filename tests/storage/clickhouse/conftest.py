"""The ClickHouse span store's tests run on chDB, the same engine in this process: one folder
per test session, a database of each module's own in it (`chdb_store`, tests/chdb_store.py)."""

from __future__ import annotations

from datetime import UTC, datetime

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
