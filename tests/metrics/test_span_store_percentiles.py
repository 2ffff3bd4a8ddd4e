"""Latency percentiles from the span store's rollups hold the bound every store states
(`latency_bins.bound_text`: ±1%), over groups of 1, 2, 14 and 60 spans too: the t-digest states
the rollups kept before answered p95 of 14 spans as 3,914 ms against an exact 1,855 ms."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
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


def _bins_of(df: pl.DataFrame) -> np.ndarray:
    """Spans per latency bin, by Python's `bin_of` of each span's duration."""
    bins = [latency_bins.bin_of(d) for d in df["duration_ms"].to_list()]
    return np.bincount(bins, minlength=latency_bins.BINS)


@pytest.mark.parametrize("model", [None, *GROUPS], ids=["all", *GROUPS])
def test_the_merged_bins_are_the_spans_bins_exactly(loaded, model):
    """The window's rollup rows (minutes, hours) and raw edges hold a bin once each: the
    engine hands them over side by side and the read adds them (`bin_map_records`,
    `decode_hex`). Every bin's count must be the spans' own, not only the percentiles."""
    store, org_id, df = loaded
    models = () if model is None else (model,)
    spec = FilterSpec(relative=None, start=WINDOW[0], end=WINDOW[1], models=models)
    query = MetricQuery(series=("duration_ms.p95",), filters=spec, bucket=None, group_by=())
    result = run_metrics(store.engine, admin_scope(org_id), query, now=WINDOW[1], force="rollup")
    assert result.source == "rollup" and {"1min", "1hour", "raw edges"} <= set(result.grains)
    want = _bins_of(df if model is None else df.filter(pl.col("model") == model))
    np.testing.assert_array_equal(result.sketch, want)


def test_a_bin_of_more_spans_than_one_record_holds_reads_whole(loaded):
    """A packed record holds at most 65535 spans (storage/packed_sketch.py): a rollup row's
    bin of more is written as several records, so its spans all count (a count cut to one
    record would leave the row's percentiles empty, its bins holding fewer spans than it
    counts, or move the median)."""
    store, _, _ = loaded
    org_id, hour = 9_017, datetime(2026, 11, 21, 10, tzinfo=UTC)
    counts = {300: 66_000, 400: 70_000, 401: 3}
    n = sum(counts.values())
    store.client.insert(
        store.table("rollup_1hour"),
        [[org_id, hour, 1, "huge", True, n, n, float(n), counts]],
        column_names=[
            "org_id",
            "bucket_start",
            "project_id",
            "model",
            "llm_call",
            "span_count",
            "duration_count",
            "duration_sum",
            "latency_bins",
        ],
    )
    spec = FilterSpec(relative=None, start=hour, end=hour + timedelta(hours=1))
    query = MetricQuery(series=SERIES, filters=spec, bucket=None, group_by=())
    result = run_metrics(
        store.engine, admin_scope(org_id), query, now=hour + timedelta(hours=2), force="rollup"
    )
    assert result.grains == ("1hour",)
    assert {int(b): int(result.sketch[b]) for b in np.flatnonzero(result.sketch)} == counts
    # the spans the row stands for, each its bin's value: polars' percentiles of them
    values = pl.Series(
        [latency_bins.representative(b) for b, c in counts.items() for _ in range(c)]
    )
    got = result.frame.to_dicts()[0]
    assert got["request_count.count"] == n
    for p, q in PERCENTILES.items():
        assert got[f"duration_ms.{p}"] == pytest.approx(values.quantile(q, "linear"), rel=1e-12), p
