"""Retention: deleting the oldest 30 days of 60 days of demo spans, and ingest during it.

A database of its own per store: `--spans` demo spans over 60 days, every demo org keeping
spans 30 days (rollups a year), then retention runs at the end of the data, as the worker
would (storage/retention.py: on PostgreSQL the month wholly expired is dropped, the rest goes
in batches of 500 traces; on SQLite batches, then the incremental vacuum), until nothing
expired is left. Meanwhile one writer stores batches of 512 new spans through the ingest write
path (spans, rollups and trace totals in one transaction), as fast as it can. Figures: spans
deleted per second, the writer's spans per second alone (15 s, before) and during the
deletion, and that every span it wrote is stored afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from datetime import timedelta

from sqlalchemy import func, select, update

from bench.case import END, analyse, fresh_url, peak_rss_mb
from observatory_core.demo.load import ensure_demo_tenants, load_demo
from observatory_core.ingest.persist import write_spans
from observatory_core.ingest.spanrows import complete_row
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.retention import expire
from observatory_core.storage.schema import orgs, projects, spans
from observatory_core.storage.stores import store_for
from observatory_core.storage.stores.base import month_start

DAYS, KEEP_DAYS, BATCH, ALONE_S = 60, 30, 512, 15.0
WRITER_TRACE = "beef"  # trace ids of the writer's spans start with this


class Writer(threading.Thread):
    """Stores batches of new, unexpired spans until stopped; counts what it stored."""

    def __init__(self, engine, org_id: int, project_id: int, start: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.org_id, self.project_id = engine, org_id, project_id
        self.ids = itertools.count(start)
        self.stop = threading.Event()
        self.stored = 0
        self.seconds = 0.0

    def batch(self) -> list[dict]:
        rows = []
        for _ in range(BATCH):
            n = next(self.ids)
            at = END - timedelta(minutes=n % 600)
            rows.append(
                complete_row(
                    {
                        "org_id": self.org_id,
                        "project_id": self.project_id,
                        "trace_id": f"{WRITER_TRACE}{n // 4:028x}",
                        "span_id": f"{n:016x}",
                        "start_time": at,
                        "end_time": at + timedelta(milliseconds=420),
                        "name": "chat gpt-4o-mini",
                        "operation": "chat",
                        "provider": "openai",
                        "model": "gpt-4o-mini",
                        "status": "ok",
                        "cost_source": "computed",
                        "input_tokens": 120,
                        "output_tokens": 40,
                        "input_text": "where is my order",
                        "output_text": "it ships tomorrow",
                    },
                    16_000,
                )
            )
        return rows

    def run(self) -> None:
        began = time.perf_counter()
        while not self.stop.is_set():
            self.stored += write_spans(self.engine, self.batch())
        self.seconds = time.perf_counter() - began


def _writer_spans(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(spans.c.trace_id.like(f"{WRITER_TRACE}%"))
        ).scalar()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--spans", type=int, default=100_000)
    args = parser.parse_args()
    engine = get_engine(fresh_url(args.db, args.spans, "bench/data", stem="bench_retention"))
    upgrade(engine)
    store = store_for(engine)
    with engine.begin() as conn:  # the months of the data, as the worker makes them ahead
        if store.span_partitions(conn) is not None:
            month = month_start(END - timedelta(days=DAYS + 1))
            while month <= END:
                if month not in {p.start for p in store.span_partitions(conn)}:
                    store.create_span_partition(conn, month)
                month = month_start(month + timedelta(days=32))
    ensure_demo_tenants(engine)
    load_demo(engine, spans=args.spans, days=DAYS, seed=7, end=END)
    with engine.begin() as conn:
        conn.execute(update(orgs).values(span_retention_days=KEEP_DAYS, rollup_retention_days=365))
        org_id, project_id = conn.execute(select(projects.c.org_id, projects.c.id).limit(1)).one()
        total = conn.execute(select(func.count()).select_from(spans)).scalar()
    analyse(engine, args.db)

    alone = Writer(engine, org_id, project_id, start=0)
    alone.start()
    time.sleep(ALONE_S)
    alone.stop.set()
    alone.join()

    during = Writer(engine, org_id, project_id, start=10**9)
    during.start()
    began = time.perf_counter()
    deleted, runs, dropped, reclaimed = 0, 0, [], 0
    while True:
        result = expire(engine, END)
        runs += 1
        deleted += result.spans
        dropped += result.partitions_dropped
        reclaimed += result.bytes_reclaimed
        if result.complete:
            break
    delete_s = time.perf_counter() - began
    during.stop.set()
    during.join()
    stored = _writer_spans(engine)
    with engine.connect() as conn:
        expired_left = conn.execute(
            select(func.count()).where(spans.c.start_time < END - timedelta(days=KEEP_DAYS + 1))
        ).scalar()
    common = {"database": args.db, "size": total, "peak_rss_mb": peak_rss_mb()}
    entries = [
        {
            "operation": "retention_delete_30d",
            "median_ms": delete_s * 1000,
            "p95_ms": delete_s * 1000,
            "rows_per_s": deleted / delete_s,
            "spans_deleted": deleted,
            "runs": runs,
            "partitions_dropped": dropped,
            "bytes_reclaimed": reclaimed,
            "expired_left": expired_left,
            **common,
        },
        {
            "operation": "retention_ingest_alone",
            "median_ms": None,
            "p95_ms": None,
            "rows_per_s": alone.stored / alone.seconds,
            **common,
        },
        {
            "operation": "retention_ingest_during_delete",
            "median_ms": None,
            "p95_ms": None,
            "rows_per_s": during.stored / during.seconds,
            "written": alone.stored + during.stored,
            "stored_after": stored,
            **common,
        },
    ]
    engine.dispose()
    print(json.dumps(entries))


if __name__ == "__main__":
    main()
