"""The ClickHouse span store on chDB (issue 17, docs/scale.md): `BENCH_ONLY=clickhouse`.

A chDB folder of its own (bench/data/clickhouse_<size>), the demo generator's spans over 30
days (`--seed 7`, every demo org), written through `storage/clickhouse/writes.py` in batches
of 50,000. Figures:
- `clickhouse_insert`: the plain insert rate, generation excluded (rows/s over the time spent
  in `write_spans`: the stored-span check, the insert, the views into rollups and totals);
  `clickhouse_demo_load` the same load with generation included.
- `clickhouse_disk_bytes_per_span` (in `rows`): bytes on disk of the spans table per span,
  and `clickhouse_disk_bytes_per_span_all_tables` with trace totals and rollups.
- the first page of the scoped span list (50 rows, newest first) over 24 hours and 30 days,
  and the totals (count, tokens, cost) of the same windows, for org 1 (acme).
- how one row per span is read against the alternatives, on the 30-day totals (the choice:
  `LIMIT 1 BY`; against none at all, `FINAL`, `argMax` by version in a GROUP BY) and first
  page (the choice: an ordered prefix kept once per span in Python; against none, `FINAL`,
  `LIMIT 1 BY`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import timedelta
from itertools import islice
from pathlib import Path

from bench.case import END, median_p95, peak_rss_mb
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.demo.catalog import ORGS
from observatory_core.demo.generator import DemoGenerator
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import complete_row
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.clickhouse.reads import Window, list_spans, span_totals
from observatory_core.storage.clickhouse.writes import BATCH, write_spans

DATABASE = "chdb"
IDS = {
    (org.slug, project.slug): (i, 100 * i + j)
    for i, org in enumerate(ORGS, start=1)
    for j, project in enumerate(org.projects)
}


def timed(fn, runs: int) -> tuple[float, float]:
    fn()  # warm, as a returning user would
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return median_p95(samples)


def entry(operation: str, size: int, median: float | None, p95: float | None, **extra) -> dict:
    return {
        "operation": operation,
        "database": DATABASE,
        "size": size,
        "median_ms": median,
        "p95_ms": p95,
        "rows_per_s": extra.pop("rows_per_s", None),
        "runs": extra.pop("runs", 1),
        "peak_rss_mb": peak_rss_mb(),
        **extra,
    }


def load(store, size: int) -> tuple[int, float, float]:
    """Spans written, seconds in `write_spans`, seconds in all (generation included)."""
    generator = DemoGenerator(ids=IDS, end=END, days=30, seed=7, prices=PriceBook({}))
    rows = (complete_row(r, 16_000) for r in generator.spans(size))
    written, writing = 0, 0.0
    started = time.perf_counter()
    while chunk := list(islice(rows, BATCH)):
        t = time.perf_counter()
        written += write_spans(store, chunk)
        writing += time.perf_counter() - t
    return written, writing, time.perf_counter() - started


def disk_bytes(store, tables: str) -> int:
    result = store.client.query(
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = %(db)s "
        f"AND table IN ({tables})",
        parameters={"db": store.database},
    )
    return int(result.result_rows[0][0] or 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--folder", default="bench/data")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    folder = Path(args.folder) / f"clickhouse_{args.size}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    store = open_span_store(f"chdb://{folder.resolve()}")
    size, out = args.size, []

    written, writing, total = load(store, size)
    out.append(
        entry(
            "clickhouse_insert",
            written,
            writing * 1000,
            writing * 1000,
            rows_per_s=written / writing,
        )
    )
    out.append(
        entry(
            "clickhouse_demo_load", written, total * 1000, total * 1000, rows_per_s=written / total
        )
    )
    spans_bytes = disk_bytes(store, "'spans'")
    all_bytes = disk_bytes(
        store, "'spans', 'trace_totals', 'rollup_1min', 'rollup_1hour', 'rollup_1day'"
    )
    out.append(
        entry("clickhouse_disk_bytes_per_span", written, None, None, rows=spans_bytes / written)
    )
    out.append(
        entry(
            "clickhouse_disk_bytes_per_span_all_tables",
            written,
            None,
            None,
            rows=all_bytes / written,
        )
    )

    scope = Scope(org_id=1, role=Role.ADMIN)
    day = Window(END - timedelta(hours=24), END)
    month = Window(END - timedelta(days=30), END)
    ops = {
        "clickhouse_list_first_page_24h": lambda: list_spans(store, scope, day),
        "clickhouse_list_first_page_30d": lambda: list_spans(store, scope, month),
        "clickhouse_totals_24h": lambda: span_totals(store, scope, day),
        "clickhouse_totals_30d": lambda: span_totals(store, scope, month),
    }
    # the alternatives to LIMIT 1 BY, on the same 30 days
    spans = store.table("spans")
    where = "org_id = 1 AND start_time >= {s:DateTime64(6, 'UTC')} AND start_time < {e:DateTime64(6, 'UTC')}"
    bounds = {
        "s": month.start.strftime("%Y-%m-%d %H:%M:%S"),
        "e": month.end.strftime("%Y-%m-%d %H:%M:%S"),
    }
    page_cols = "start_time, trace_id, span_id, name, model, total_cost_usd"
    order = "ORDER BY start_time DESC, trace_id DESC, span_id DESC"
    raw = {
        "clickhouse_totals_30d_no_dedup": f"SELECT count(), sum(total_tokens), sum(total_cost_usd) FROM {spans} WHERE {where}",
        "clickhouse_totals_30d_final": f"SELECT count(), sum(total_tokens), sum(total_cost_usd) FROM {spans} FINAL WHERE {where}",
        "clickhouse_totals_30d_argmax": (
            "SELECT count(), sum(t), sum(c) FROM (SELECT argMax(total_tokens, version) AS t, "
            f"argMax(total_cost_usd, version) AS c FROM {spans} WHERE {where} GROUP BY trace_id, span_id)"
        ),
        "clickhouse_list_first_page_30d_no_dedup": f"SELECT {page_cols} FROM {spans} WHERE {where} {order} LIMIT 50",
        "clickhouse_list_first_page_30d_final": f"SELECT {page_cols} FROM {spans} FINAL WHERE {where} {order} LIMIT 50",
        "clickhouse_list_first_page_30d_limit_1_by": (
            f"SELECT {page_cols} FROM {spans} WHERE {where} {order} LIMIT 1 BY trace_id, span_id LIMIT 50"
        ),
    }
    for name, sql in raw.items():
        ops[name] = lambda sql=sql: store.client.query(sql, parameters=bounds).result_rows
    for name, fn in ops.items():
        median, p95 = timed(fn, args.runs)
        out.append(entry(name, written, median, p95, runs=args.runs))
    store.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
