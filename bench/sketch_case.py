"""The latency sketch's cost (storage/packed_sketch.py): bytes per rollup row, chart latency
with percentiles, and the full rollup rebuild that migration 0015 runs, on the database the
main case built (the rebuild recomputes the same rollups; the database is analysed again
after it).

`measure` uses only calls that predate the sparse sketch, so the same figures can be taken
on an older checkout for a before/after comparison (docs/benchmarks.md says how).
"""

from __future__ import annotations

import argparse
import gc
import json
import time

from sqlalchemy import text

from bench.case import LATE, analyse, peak_rss_mb, timed
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.rollups.maintain import rebuild
from observatory_core.storage.engine import get_engine

GRAINS = ("1min", "1hour", "1day")


def _sizes(engine, db: str) -> list[dict]:
    """Per grain: rows, mean sketch bytes per row and (PostgreSQL) mean whole-row bytes."""
    out = []
    sketch = "pg_column_size(latency_sketch)" if db == "postgresql" else "length(latency_sketch)"
    whole = "avg(pg_column_size(t.*))" if db == "postgresql" else "NULL"
    with engine.connect() as conn:
        for grain in GRAINS:
            rows, mean, biggest, row_bytes = conn.execute(
                text(
                    f"SELECT count(*), avg({sketch}), max({sketch}), {whole} FROM rollup_{grain} t"
                )
            ).one()
            out.append(
                {
                    "operation": f"sketch_bytes_per_row_{grain}",
                    "rows": rows,
                    "sketch_bytes": float(mean or 0),
                    "sketch_bytes_max": float(biggest or 0),
                    "row_bytes": float(row_bytes) if row_bytes is not None else None,
                }
            )
    return out


def measure(engine, db: str, runs: int) -> list[dict]:
    scope = Scope(org_id=1, role=Role.ADMIN)
    month = FilterSpec(relative="30d")
    percentiles = ("duration_ms.p50", "duration_ms.p95", "duration_ms.p99")
    charts = {
        # the Metrics page's default shape, as bench/case.py times it
        "sketch_chart_30d_hourly_by_model": MetricQuery(
            series=("request_count.count", "duration_ms.avg", "duration_ms.p95", "total_cost.sum"),
            filters=month,
            bucket="1hour",
            group_by=("model",),
        ),
        "sketch_chart_30d_hourly_percentiles_by_model": MetricQuery(
            series=percentiles, filters=month, bucket="1hour", group_by=("model",)
        ),
        # every sketch of 30 days merged into one per model: the merge at its widest
        "sketch_totals_30d_percentiles_by_model": MetricQuery(
            series=percentiles, filters=month, bucket=None, group_by=("model",)
        ),
    }
    out = _sizes(engine, db)
    gc.collect()
    for name, query in charts.items():
        median, p95 = timed(lambda q=query: run_metrics(engine, scope, q, now=LATE), runs)
        out.append({"operation": name, "median_ms": median, "p95_ms": p95, "runs": runs})
    started = time.perf_counter()
    rebuild(engine)
    seconds = time.perf_counter() - started
    out.append({"operation": "sketch_rollup_rebuild", "median_ms": seconds * 1000, "runs": 1})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    engine = get_engine(args.url)
    db = engine.dialect.name
    base = {"database": db, "size": args.size}
    measured = measure(engine, db, args.runs)
    analyse(engine, db)  # the rebuild's dead rows and stale statistics, for later families
    entries = [
        {
            "median_ms": None,
            "p95_ms": None,
            "rows_per_s": None,
            "rows": None,
            "runs": None,
            **base,
            **e,
            "peak_rss_mb": peak_rss_mb(),
        }
        for e in measured
    ]
    print(json.dumps(entries))


if __name__ == "__main__":
    main()
