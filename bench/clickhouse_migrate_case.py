"""`migrate-spans` from the PostgreSQL bench database into a fresh chDB folder (issue 17,
docs/scale.md, "Moving spans in"): part of `BENCH_ONLY=clickhouse`.

The source is `obs_bench_<size>` (the main case's database), opened read-only: every
transaction is `default_transaction_read_only`, so the copy cannot change it. The target is a
chDB folder of its own (bench/data/clickhouse_migrate_<size>), emptied first. Figures:
- `clickhouse_migrate_spans`: spans copied per second and the whole run's time (keyset pages of
  `--batch` spans read from PostgreSQL, written through `writes.write_spans`, a checkpoint per
  page), `median_ms` = the run's milliseconds;
- `clickhouse_migrate_rerun`: the same command again once it is done (the checkpoints: nothing
  read but one empty page per org);
- `clickhouse_migrate_check`: `--check`'s per-org counts and sums on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from sqlalchemy import event

from bench.case import peak_rss_mb
from observatory_core.storage.clickhouse import migrate_spans as mig
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.engine import get_engine


def read_only(engine) -> None:
    """Every connection of `engine` read-only (committed, so a pool reset keeps it)."""

    def on_connect(dbapi_conn, _record) -> None:
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = on")
        dbapi_conn.commit()

    event.listen(engine, "connect", on_connect)


def entry(operation: str, size: int, ms: float, rows_per_s: float | None, **extra) -> dict:
    return {
        "operation": operation,
        "database": "chdb",
        "size": size,
        "median_ms": ms,
        "p95_ms": ms,
        "rows_per_s": rows_per_s,
        "runs": 1,
        "peak_rss_mb": peak_rss_mb(),
        "load_average": os.getloadavg()[0],
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--source", help="default: the PostgreSQL bench database of --size")
    parser.add_argument("--folder", default="bench/data")
    parser.add_argument("--batch", type=int, default=mig.BATCH)
    args = parser.parse_args()
    source = args.source or (f"postgresql+psycopg://postgres@127.0.0.1:5432/obs_bench_{args.size}")
    engine = get_engine(source)
    read_only(engine)
    folder = Path(args.folder) / f"clickhouse_migrate_{args.size}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    store = open_span_store(f"chdb://{folder.resolve()}")
    out = []
    try:
        orgs = mig.source_orgs(engine)
        load_before = os.getloadavg()[0]
        report = mig.migrate_spans(engine, store, org_ids=list(orgs), batch=args.batch)
        out.append(
            entry(
                "clickhouse_migrate_spans",
                report.copied,
                report.seconds * 1000,
                report.rate,
                batch=args.batch,
                load_average_before=load_before,
            )
        )
        again = mig.migrate_spans(engine, store, org_ids=list(orgs), batch=args.batch)
        out.append(entry("clickhouse_migrate_rerun", again.copied, again.seconds * 1000, None))
        started = time.perf_counter()
        checks = mig.check(engine, store, orgs)
        seconds = time.perf_counter() - started
        out.append(
            entry(
                "clickhouse_migrate_check",
                report.copied,
                seconds * 1000,
                None,
                matches=all(c.ok for c in checks),
            )
        )
    finally:
        store.close()
        engine.dispose()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
