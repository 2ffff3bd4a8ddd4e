"""Latency percentiles from the span store's rollups hold the bound every store states
(`latency_bins.bound_text`: ±1%), over groups of 1, 2, 14 and 60 spans too: the t-digest states
the rollups kept before answered p95 of 14 spans as 3,914 ms against an exact 1,855 ms."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.storage import latency_bins
from observatory_core.storage.clickhouse.writes import write_spans
from tests.helpers import admin_scope
from tests.storage.clickhouse.conftest import demo_rows

GROUPS = {"one": 1, "two": 2, "fourteen": 14, "sixty": 60, "many": 250}
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
# off every minute: raw edges at both ends, rollups (minutes, hours) inside
WINDOW = (T0 + timedelta(seconds=20), T0 + timedelta(hours=3, minutes=4, seconds=11))
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
SERIES = (*(f"duration_ms.{p}" for p in PERCENTILES), "request_count.count")


@pytest.fixture(scope="module")
def loaded(chdb_store):
    """Spans of five models, long-tailed latencies, written in batches as ingestion writes
    them; a few of the 60 in the window's first, raw, edge."""
    rng = random.Random(17)
    template = demo_rows(1)[0]
    rows = []
    for model, n in GROUPS.items():
        for i in range(n):
            duration = round(rng.lognormvariate(6.8, 1.1), 3)
            if model == "sixty" and i < 5:
                at = WINDOW[0] + timedelta(seconds=rng.uniform(0, 39))
            else:
                at = T0 + timedelta(minutes=1, seconds=rng.uniform(0, 3 * 3600))
            rows.append(
                {
                    **template,
                    "provider": "openai",
                    "operation": "chat",
                    "llm_call": True,
                    "model": model,
                    "trace_id": uuid.uuid4().hex,
                    "span_id": uuid.uuid4().hex[:16],
                    "start_time": at,
                    "end_time": at + timedelta(milliseconds=duration),
                    "duration_ms": duration,
                }
            )
    rng.shuffle(rows)
    half = len(rows) // 2
    assert write_spans(chdb_store, rows[:half]) + write_spans(chdb_store, rows[half:]) == len(rows)
    df = pl.DataFrame(
        {
            "model": [r["model"] for r in rows],
            "start_time": [r["start_time"] for r in rows],
            "duration_ms": [r["duration_ms"] for r in rows],
        }
    ).filter(pl.col("start_time").is_between(*WINDOW, closed="left"))
    return chdb_store, template["org_id"], df


def _exact(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    aggs = [
        pl.col("duration_ms").quantile(q, interpolation="linear").alias(f"duration_ms.{p}")
        for p, q in PERCENTILES.items()
    ]
    aggs.append(pl.len().alias("request_count.count"))
    return df.group_by(keys).agg(aggs) if keys else df.select(aggs)


def _within_bound(got: float, want: float) -> bool:
    floor = latency_bins.ABSOLUTE_FLOOR_MS / 2
    return abs(got - want) <= latency_bins.RELATIVE_BOUND * want + 1e-9 or abs(got - want) <= floor


def _run(loaded, group_by: tuple[str, ...]):
    store, org_id, _ = loaded
    spec = FilterSpec(relative=None, start=WINDOW[0], end=WINDOW[1])
    query = MetricQuery(series=SERIES, filters=spec, bucket=None, group_by=group_by)
    return run_metrics(store.engine, admin_scope(org_id), query, now=WINDOW[1], force="rollup")


def test_percentiles_of_small_groups_from_rollups_hold_the_stated_bound(loaded):
    result = _run(loaded, ("model",))
    assert result.source == "rollup" and "raw edges" in result.grains
    assert latency_bins.bound_text() in result.explanation
    want = {r["model"]: r for r in _exact(loaded[2], ["model"]).to_dicts()}
    got = {r["model"]: r for r in result.frame.to_dicts()}
    assert {m: r["request_count.count"] for m, r in got.items()} == GROUPS
    for model, row in want.items():
        for p in PERCENTILES:
            s = f"duration_ms.{p}"
            assert _within_bound(got[model][s], row[s]), (model, s, got[model][s], row[s])


def test_percentiles_of_all_spans_from_rollups_hold_the_stated_bound(loaded):
    result = _run(loaded, ())
    assert result.source == "rollup"
    got, want = result.frame.to_dicts()[0], _exact(loaded[2], []).to_dicts()[0]
    assert got["request_count.count"] == want["request_count.count"] == sum(GROUPS.values())
    for p in PERCENTILES:
        s = f"duration_ms.{p}"
        assert _within_bound(got[s], want[s]), (s, got[s], want[s])
    # the merged bins (the latency histogram) count every span of the window
    assert result.sketch is not None and int(result.sketch.sum()) == want["request_count.count"]
