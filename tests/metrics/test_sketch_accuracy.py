"""Percentiles served from rollups are within ±1% of the exact ones, over many distributions.

The exact value is polars' `quantile(q, interpolation="linear")` over the raw rows: the same
definition the engine uses on raw spans (SQL's `percentile_cont`: the value at rank
(n - 1) * q, interpolated between the two nearest ranks) and mimics on the sketch (each bin
standing for its representative value). Latencies at or under 0.1 ms are within ±0.05 ms;
above one hour they read as one hour (docs/metrics.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.storage.latency_bins import ABSOLUTE_FLOOR_MS, LAST_EDGE_MS
from tests.helpers import admin_scope, all_spans, make_org, span, write

START = datetime(2026, 10, 5, 9, tzinfo=UTC)
HOURS = 3
PER_HOUR = 400
SERIES = ("duration_ms.p50", "duration_ms.p90", "duration_ms.p95", "duration_ms.p99")
QUANTILES = {
    "duration_ms.p50": 0.5,
    "duration_ms.p90": 0.9,
    "duration_ms.p95": 0.95,
    "duration_ms.p99": 0.99,
}
BOUND = 0.01  # relative: what the pages promise


def _draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Latencies in ms, one distribution per model name."""
    bimodal = np.where(rng.random(n) < 0.7, rng.normal(120, 10, n), rng.normal(4000, 300, n))
    return {
        "uniform": rng.uniform(1, 10_000, n),
        "lognormal": rng.lognormal(np.log(800), 1.0, n),
        "bimodal": np.abs(bimodal) + 1,
        "heavy-tail": (rng.pareto(1.5, n) + 1) * 200,
        "tiny": rng.uniform(0.1001, 2, n),  # just above the floor: relative bound still
        "huge": rng.uniform(600_000, 3_500_000, n),  # 10 to 58 minutes
        "sub-floor": rng.uniform(0, ABSOLUTE_FLOOR_MS, n),  # clamped into bin 0
        "over-an-hour": rng.uniform(LAST_EDGE_MS * 1.01, LAST_EDGE_MS * 3, n),  # clamped
    }


@pytest.fixture
def sketch_data(engine):
    org, (project,) = make_org(engine, "acme")
    rng = np.random.default_rng(19)
    rows = []
    for hour in range(HOURS):
        for model, values in _draw(rng, PER_HOUR).items():
            for i, ms in enumerate(values):
                at = START + timedelta(hours=hour, seconds=float(i * 3600 / PER_HOUR))
                rows.append(span(org, project, at, model=model, duration_ms=float(ms)))
    write(engine, rows)
    return engine, org


def _allowed(model: str, exact: float) -> float:
    if model == "sub-floor":
        return ABSOLUTE_FLOOR_MS / 2
    return BOUND * exact + 1e-9


def _check(got: pl.DataFrame, want: pl.DataFrame, keys: list[str]) -> int:
    joined = want.join(got, on=keys, how="left", suffix="_got")
    assert joined.height == want.height
    checked = 0
    for row in joined.iter_rows(named=True):
        model = row["model"]
        for name in SERIES:
            exact, read = row[name], row[f"{name}_got"]
            assert read is not None, (row, name)
            if model == "over-an-hour":
                assert read == LAST_EDGE_MS, (model, name, read)  # clamped: reads as 1 hour
            else:
                assert abs(read - exact) <= _allowed(model, exact), (model, name, read, exact)
            checked += 1
    return checked


def _exact(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    return df.group_by(keys).agg(
        pl.col("duration_ms").quantile(q, interpolation="linear").alias(name)
        for name, q in QUANTILES.items()
    )


def test_rollup_percentiles_are_within_one_percent(sketch_data):
    engine, org = sketch_data
    df = all_spans(engine).with_columns(
        pl.col("start_time").dt.convert_time_zone("UTC").dt.truncate("1h").alias("bucket")
    )
    spec = FilterSpec(relative=None, start=START, end=START + timedelta(hours=HOURS))
    scope = admin_scope(org)
    now = START + timedelta(days=1)

    hourly = run_metrics(
        engine,
        scope,
        MetricQuery(series=SERIES, filters=spec, bucket="1hour", group_by=("model",)),
        now=now,
        force="rollup",
    )
    assert hourly.source == "rollup" and hourly.exact_percentiles is False
    got = hourly.frame.with_columns(pl.col("bucket").dt.convert_time_zone("UTC"))
    want = _exact(df, ["bucket", "model"]).with_columns(pl.col("bucket").dt.cast_time_unit("us"))
    got = got.with_columns(pl.col("bucket").dt.cast_time_unit("us"))
    assert _check(got, want, ["bucket", "model"]) == HOURS * 8 * len(SERIES)

    # merged across hours (and, for the ragged range, with raw spans at the edges)
    for start, end in (
        (START, START + timedelta(hours=HOURS)),
        (START + timedelta(minutes=7, seconds=30), START + timedelta(hours=2, minutes=41)),
    ):
        ranged = FilterSpec(relative=None, start=start, end=end)
        totals = run_metrics(
            engine,
            scope,
            MetricQuery(series=SERIES, filters=ranged, bucket=None, group_by=("model",)),
            now=now,
            force="rollup",
        )
        inside = df.filter((pl.col("start_time") >= start) & (pl.col("start_time") < end))
        assert _check(totals.frame, _exact(inside, ["model"]), ["model"]) == 8 * len(SERIES)
