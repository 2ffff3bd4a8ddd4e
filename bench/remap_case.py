"""`remap` on PostgreSQL: demo spans made to look as ingest stored them before it knew
Traceloop's and OpenInference's names (operation `other`, no model, the names kept in
`attributes`), then remapped. Figures: spans read per second when every LLM call is filled
(rollups and trace totals rebuilt included), and when a second run finds nothing to fill.
"""

from __future__ import annotations

import argparse
import json
import time

from sqlalchemy import create_engine, text

from bench.case import END
from observatory_core.demo.load import ensure_demo_tenants, load_demo
from observatory_core.ingest.remap import remap
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NAME = "obs_bench_remap"
FORGET = (
    "UPDATE spans SET operation = 'other', model = NULL, cost_source = 'unpriced', "
    "input_cost_usd = 0, output_cost_usd = 0, total_cost_usd = 0, "
    "attributes = attributes || jsonb_build_object('llm.request.type', 'chat', "
    "'llm.invocation_parameters', jsonb_build_object('model', model)::text) "
    "WHERE operation = 'chat' AND model IS NOT NULL"
)


def _fresh_database() -> str:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{NAME}"'))
    admin.dispose()
    return ADMIN.rsplit("/", 1)[0] + f"/{NAME}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=50_000)
    args = parser.parse_args()
    engine = get_engine(_fresh_database())
    upgrade(engine)
    ensure_demo_tenants(engine)
    load_demo(engine, spans=args.spans, days=7, seed=7, end=END)
    with engine.begin() as conn:
        forgotten = conn.execute(text(FORGET)).rowcount
    started = time.perf_counter()
    filled = remap(engine)
    fill_s = time.perf_counter() - started
    again = remap(engine)
    entries = [
        {
            "operation": f"remap_fill_{forgotten}_of_{filled.scanned}",
            "database": "postgresql",
            "size": filled.scanned,
            "median_ms": fill_s * 1000,
            "p95_ms": fill_s * 1000,
            "rows_per_s": filled.scanned / fill_s,
            "changed": filled.changed,
            "peak_rss_mb": None,
        },
        {
            "operation": "remap_nothing_to_fill",
            "database": "postgresql",
            "size": again.scanned,
            "median_ms": again.seconds * 1000,
            "p95_ms": again.seconds * 1000,
            "rows_per_s": again.rate,
            "changed": again.changed,
            "peak_rss_mb": None,
        },
    ]
    engine.dispose()
    print(json.dumps(entries))


if __name__ == "__main__":
    main()
