"""Breakdowns by a tag or metadata key (issue 19) on PostgreSQL, in a database of its own (a
declared key adds rollup rows, which would change the main case's figures): demo spans over
30 days (a copy of the main case's database when it is there and declares nothing), whose calls carry a `customer:<company>` tag; `tag:customer` is declared and
back-filled (timed), then the 30-day daily cost is charted by the declared key (rollups),
by an undeclared key (`metadata:region`, the raw path) and by model (for comparison).
Targets at 1M spans: declared <= 150 ms, undeclared <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta

from sqlalchemy import create_engine, text

from bench.case import END, PG_ADMIN, analyse, peak_rss_mb, timed
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.demo.load import ensure_demo_tenants, load_demo
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.rollups.dimensions import backfill_step, declare
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade


def _main_case_copyable(size: int) -> bool:
    """The main case's database holds the same data (same seed, days and end): when it is
    complete and declares no dimension, a copy of it saves loading `size` spans again."""
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/obs_bench_{size}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            spans = conn.execute(text("SELECT count(*) FROM spans")).scalar_one()
            declared = conn.execute(text("SELECT count(*) FROM org_dimensions")).scalar_one()
    except Exception:  # no such database, or of an older schema
        return False
    finally:
        engine.dispose()
    return abs(spans - size) <= size // 100 and declared == 0


def _fresh_database(size: int) -> tuple[str, bool]:
    """The case's database, and whether it was copied from the main case's."""
    name = f"obs_bench_dims_{size}"
    copy = _main_case_copyable(size)
    template = f' TEMPLATE "obs_bench_{size}"' if copy else ""
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"{template}'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", copy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--url")  # ignored: this case builds its own database
    args = parser.parse_args()
    url, copied = _fresh_database(args.size)
    engine = get_engine(url)
    upgrade(engine)
    if not copied:
        ensure_demo_tenants(engine)
        load_demo(engine, spans=args.size, days=30, seed=7, end=END)
    analyse(engine, "postgresql")
    with engine.connect() as conn:
        org_id = conn.exec_driver_sql("SELECT id FROM orgs WHERE slug = 'acme'").scalar_one()
    scope = Scope(org_id=org_id, role=Role.ADMIN, username="bench")
    declare(engine, scope, "tag:customer", now=END)
    started, chunks, rows = time.perf_counter(), 0, 0
    while (step := backfill_step(engine)) is not None:
        chunks += 1
        rows = step.get("rows_done", rows)
    backfill_s = time.perf_counter() - started
    analyse(engine, "postgresql")
    base = {"database": "postgresql", "size": args.size}
    out = [
        {
            **base,
            "operation": f"dims_backfill_30d_{chunks}_chunks",
            "median_ms": backfill_s * 1000,
            "p95_ms": backfill_s * 1000,
            "rows_per_s": args.size / backfill_s,
            "runs": 1,
            "peak_rss_mb": peak_rss_mb(),
        }
    ]
    spec = FilterSpec(relative=None, start=END - timedelta(days=30), end=END)
    # what declaring saves: the undeclared key read from raw spans, past the cap that refuses
    # such a read over 100,000 spans in the app (issue 25)
    uncapped = {"max_raw_spans": args.size * 2}
    for label, key in (
        ("declared_key", "tag:customer"),
        ("undeclared_key", "metadata:region"),
        ("model", "model"),
    ):
        query = MetricQuery(
            series=("total_cost.sum",), filters=spec, bucket="1day", group_by=(key,)
        )
        source = run_metrics(engine, scope, query, now=END, **uncapped).source
        median, p95 = timed(
            lambda q=query: run_metrics(engine, scope, q, now=END, **uncapped), args.runs
        )
        out.append(
            {
                **base,
                "operation": f"dims_30d_daily_cost_by_{label}_{source}",
                "median_ms": median,
                "p95_ms": p95,
                "rows_per_s": None,
                "runs": args.runs,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    engine.dispose()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
