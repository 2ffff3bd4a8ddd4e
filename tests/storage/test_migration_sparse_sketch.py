"""Migration 0015 on a populated database: the rollups' coarse sketches (0009's packed numbers)
are replaced by the sparse ones, recomputed from the stored spans, and percentiles read from
them are within ±1% of polars' exact ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from alembic import command
from sqlalchemy import text

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.rollups.upgrade import upgrade as upgrade_with_rebuild
from observatory_core.storage import migrate
from observatory_core.storage.engine import get_engine
from tests.helpers import (
    admin_scope,
    all_spans,
    assert_rollups_match_rebuild,
    make_org,
    rollup_rows,
    span,
    write,
)
from tests.storage.test_packed_sketch import fresh_url  # noqa: F401 (a fixture)

START = datetime(2026, 9, 1, tzinfo=UTC)


def test_0015_recomputes_the_sketches_of_a_populated_database(fresh_url):  # noqa: F811
    engine = get_engine(fresh_url)
    migrate.upgrade(engine)
    org, (project,) = make_org(engine, "acme")
    rng = np.random.default_rng(15)
    latencies = rng.lognormal(np.log(900), 0.8, 3000)
    write(
        engine,
        [
            span(
                org, project, START + timedelta(minutes=i % 600), model=f"m{i % 3}", duration_ms=ms
            )
            for i, ms in enumerate(latencies.tolist())
        ],
    )
    with engine.begin() as conn:  # back to 0014, its rows holding 0009's packed numbers
        command.downgrade(migrate.alembic_config(engine, conn), "0014")
        old = "123456789012" if engine.dialect.name == "postgresql" else "X'0102030405'"
        for grain in ("1min", "1hour", "1day"):
            conn.execute(text(f"UPDATE rollup_{grain} SET latency_sketch = {old}"))
    with pytest.raises(migrate.RebuildNeeded):
        migrate.upgrade(engine)  # storage alone cannot recompute them: refused, rolled back
    assert migrate.current_revision(engine) == "0014"

    upgrade_with_rebuild(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    for grain in ("1min", "1hour", "1day"):
        assert rollup_rows(engine, grain)["sketch_spans"].sum() == 3000, grain
    assert_rollups_match_rebuild(engine)

    df = all_spans(engine)
    result = run_metrics(
        engine,
        admin_scope(org),
        MetricQuery(
            series=("duration_ms.p50", "duration_ms.p95", "duration_ms.p99"),
            filters=FilterSpec(relative=None, start=START, end=START + timedelta(hours=10)),
            bucket=None,
            group_by=("model",),
        ),
        now=START + timedelta(days=1),
        force="rollup",
    )
    want = df.group_by("model").agg(
        pl.col("duration_ms").quantile(q, interpolation="linear").alias(f"duration_ms.p{p}")
        for p, q in ((50, 0.5), (95, 0.95), (99, 0.99))
    )
    joined = want.join(result.frame, on="model", suffix="_got")
    assert joined.height == 3
    for row in joined.iter_rows(named=True):
        for p in (50, 95, 99):
            exact, read = row[f"duration_ms.p{p}"], row[f"duration_ms.p{p}_got"]
            assert abs(read - exact) <= 0.01 * exact, (row["model"], p, read, exact)
