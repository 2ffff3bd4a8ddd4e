"""A demo load through the row-making child into an org that declared a metadata key as a
dimension: the write path reads the rows' metadata to fill the slot, so the child hands them
over as objects, not as JSON text (`load._json_unread`); the slot holds each span's value, in
the spans and the rollups, against polars on the generated rows."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from sqlalchemy import select

from observatory_core.base.settings import get_settings
from observatory_core.demo import load as demo_load
from observatory_core.demo import producer
from observatory_core.demo.generator import DemoGenerator
from observatory_core.demo.load import ensure_demo_tenants, load_demo
from observatory_core.ingest import to_clickhouse
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import complete_row
from observatory_core.rollups.dimensions import declare
from observatory_core.semantic.fields import SLOT_MARK
from observatory_core.storage.clickhouse import current
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import org_dimensions
from tests.helpers import admin_scope

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SPANS, DAYS, SEED = 3_000, 30, 11


@pytest.fixture
def store(chdb_session, monkeypatch, tmp_path):
    monkeypatch.setattr(to_clickhouse, "BATCH", 1_000)  # past one batch: the child makes rows
    monkeypatch.setattr(producer, "CHUNK", 350)
    store = chdb_session.store("demo_metadata_slot")
    url = chdb_session.url(store.database)
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", url)
    monkeypatch.setitem(current._OPEN, url, store)
    get_settings.cache_clear()
    to_clickhouse.forget_settings()
    engine = get_engine(f"sqlite:///{tmp_path / 'observatory.db'}")
    upgrade(engine)
    yield engine, store
    get_settings.cache_clear()
    to_clickhouse.forget_settings()
    chdb_session.drop(store)
    engine.dispose()


def test_a_declared_metadata_key_fills_its_slot(store, monkeypatch):
    engine, store = store
    ids = ensure_demo_tenants(engine)
    org = min(org for org, _ in ids.values())
    declare(engine, admin_scope(org), "metadata:region")
    with engine.connect() as conn:
        slot = conn.execute(
            select(org_dimensions.c.slot).where(org_dimensions.c.org_id == org)
        ).scalar_one()
        prices = PriceBook.load(conn)
    asked = []
    made = producer.produced_rows

    def spied(**kwargs):
        asked.append(kwargs["json_text"])
        return made(**kwargs)

    monkeypatch.setattr(demo_load, "produced_rows", spied)
    report = load_demo(engine, spans=SPANS, days=DAYS, seed=SEED, end=END)
    assert asked == [False]
    generator = DemoGenerator(ids=ids, end=END, days=DAYS, seed=SEED, prices=prices)
    sent = pl.DataFrame(
        [complete_row(r, 16_000) for r in generator.spans(SPANS)], infer_schema_length=None
    )
    assert report.spans == sent.height
    expected = (
        sent.filter(pl.col("org_id") == org)
        .group_by(pl.col("metadata").struct.field("region").alias("region"))
        .agg(pl.len().cast(pl.UInt64).alias("spans"))
        .select((SLOT_MARK + pl.col("region")).alias("region"), "spans")
        .sort("region")
    )
    assert expected.height == 3  # the demo's three regions
    for table, count in (("spans", "count()"), ("rollup_1hour", "sum(span_count)")):
        found = store.client.query(
            f"SELECT ifNull({slot}, '') AS region, toUInt64({count}) AS spans "
            f"FROM {store.table(table)} WHERE org_id = {org} GROUP BY region ORDER BY region"
        ).result_rows
        assert found == list(expected.iter_rows()), table
