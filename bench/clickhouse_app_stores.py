"""What bench/clickhouse_app_case.py needs of each store besides the reads: the checks made
before it writes (acme is org 1), chDB settled after its load (no merge running), PostgreSQL's
bytes per span and which database to read; a chDB folder loaded before schema version 10 has
its parts rewritten before the reads (`rewrite_old_parts`)."""

from __future__ import annotations

import sys
import time

from sqlalchemy import select, text

from bench.grid_case import database_url, spans_in
from observatory_core.storage.clickhouse import rollup_retention
from observatory_core.storage.schema import orgs

# the span store's tables: spans, trace totals, the rollups and the hours' actors
SPAN_TABLES = ("spans", "trace_totals", *rollup_retention.TABLES)
PG_SPAN_TABLES = (*SPAN_TABLES, "rollup_actors_1day")


def acme_is_org_1(engine) -> None:
    """`bench.case.write_trace` writes into org 1, project 1: the checks assume that is acme."""
    with engine.connect() as conn:
        org_id = conn.execute(select(orgs.c.id).where(orgs.c.slug == "acme")).scalar()
    if org_id != 1:
        sys.exit(f"The demo org acme is org {org_id}, not 1: the 50-span trace would miss it.")


def settle(store, limit_s: float = 600) -> tuple[float, dict[str, int]]:
    """Seconds waited until chDB runs no merge (the reads then meet the parts a quiet store
    keeps), and the active parts per span table."""
    started = time.perf_counter()
    while store.client.query("SELECT count() FROM system.merges").result_rows[0][0]:
        if time.perf_counter() - started > limit_s:
            break
        time.sleep(0.5)
    waited = time.perf_counter() - started
    rows = store.client.query(
        "SELECT table, count() FROM system.parts WHERE active AND database = %(db)s GROUP BY table",
        parameters={"db": store.database},
    ).result_rows
    return round(waited, 1), {t: int(n) for t, n in rows if t in SPAN_TABLES}


def rewrite_old_parts(store, loaded: dict) -> float | None:
    """Seconds taken to rewrite the spans' parts of a folder loaded before schema version 10
    (`loaded`: its loaded.json, without a `schema_version` of 10 or more) and not rewritten
    since (no `parts_rewritten_s` in it), so the reads meet the codecs a store made now has: the
    store's open does not rewrite them (`ddl._page_columns_lz4`), and parts keep ZSTD(1) on the
    page columns until merged. None when there was nothing to rewrite. Waits for the rewrite
    (`mutations_sync = 2`)."""
    if loaded.get("schema_version", 0) >= 10 or "parts_rewritten_s" in loaded:
        return None
    started = time.perf_counter()
    store.client.command(
        f"ALTER TABLE {store.table('spans')} REWRITE PARTS", settings={"mutations_sync": 2}
    )
    return round(time.perf_counter() - started, 1)


def pg_disk_bytes_per_span(engine) -> float:
    """Bytes of the span tables (indexes and TOAST included) per span held."""
    with engine.connect() as conn:
        total = conn.execute(
            text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname = ANY(:t)"
            ),
            {"t": list(PG_SPAN_TABLES)},
        ).scalar()
        spans = conn.exec_driver_sql("SELECT count(*) FROM spans").scalar()
    return int(total) / spans


def pg_url(url: str | None, size: int, folder: str) -> str:
    """The PostgreSQL database to read: `--url`, else the main case's of this size, which must
    exist (this case never builds one)."""
    url = url or database_url("postgresql", size, folder)
    if (
        url == database_url("postgresql", size, folder)
        and spans_in(url, "postgresql", size, folder) is None
    ):
        sys.exit(f"No PostgreSQL bench database with {size:,} spans: run the main case first.")
    return url
