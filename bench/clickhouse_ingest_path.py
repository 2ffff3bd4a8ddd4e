"""The span store's ingest path in one process, where its CPU goes (docs/span-store-internals.md,
"Twin calls"): the ingest case's protobuf requests (`bench/ingest_case.py`) mapped by the receiver
and written by `to_clickhouse.write_spans` in groups of four (2,048 spans, what four waiting clients
make) into a fresh chDB store, with the CPU (`time.process_time`: every thread, chDB's included) of
the mapping, of the whole write, and of each kind of statement. No profiler: its overhead distorts
Python against the engine. Prints one JSON line.

    PYTHONPATH=. .venv/bin/python -m bench.clickhouse_ingest_path [--groups 50]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from datetime import UTC, datetime

from bench.case import load_1min
from bench.clickhouse_ingest_case import scratch_app
from bench.ingest_case import BATCH, build_bodies
from observatory_core.ingest import span_store_twins, to_clickhouse
from observatory_core.ingest.apikeys import KeyInfo
from observatory_core.ingest.otlp import PROTOBUF, parse_request
from observatory_core.ingest.receiver import Receiver
from observatory_core.storage.clickhouse import writes
from observatory_core.storage.clickhouse.connect import open_span_store

PER_GROUP = 4  # requests of 512 spans a group


def _timed(cpu: dict[str, float], name: str, call):
    def run(*args, **kwargs):
        started = time.process_time()
        try:
            return call(*args, **kwargs)
        finally:
            cpu[name] += time.process_time() - started

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=50)
    args = parser.parse_args()
    cpu: dict[str, float] = defaultdict(float)
    # the statements by what asks them: the check, the twin candidates, the insert
    writes.stored_starts = _timed(cpu, "stored_check", writes.stored_starts)
    span_store_twins._pool_rows = _timed(cpu, "twin_candidates", span_store_twins._pool_rows)
    with scratch_app("bench-path", "Bench path") as (folder, engine, org_id):
        bodies = build_bodies(args.groups * PER_GROUP + 1, seed=7)
        store = open_span_store(f"chdb://{folder}/spans")
        store.client.insert = _timed(cpu, "insert", store.client.insert)
        receiver = Receiver(engine)
        key = KeyInfo(id=0, org_id=org_id, project_id=None, scopes=frozenset({"ingest"}))

        def group(requests: list[bytes], into: dict[str, float]) -> int:
            started = time.process_time()
            rows = []
            for body in requests:
                parsed = parse_request(body, PROTOBUF)
                rows += receiver.map_request(parsed, key, PROTOBUF, datetime.now(UTC)).rows
            mapped = time.process_time()
            written = to_clickhouse.write_spans(store, engine, rows, batch_size=len(rows))
            into["mapping"] += mapped - started
            into["write"] += time.process_time() - mapped
            return written

        group(bodies[:1], defaultdict(float))  # the store's first write: opened, warmed
        cpu.clear()
        load_start, wall = load_1min(), time.perf_counter()
        spans = sum(
            group(bodies[1 + g * PER_GROUP : 1 + (g + 1) * PER_GROUP], cpu)
            for g in range(args.groups)
        )
        wall = time.perf_counter() - wall
        ((stored, set_aside, llm_calls),) = store.client.query(
            f"SELECT count(), countIf(duplicate_of IS NOT NULL), countIf(llm_call) "
            f"FROM {store.table('spans')}"
        ).result_rows
        store.close()
        engine.dispose()
    per_10k = {f"{k}_cpu_s_per_10k": round(v / spans * 10_000, 3) for k, v in cpu.items()}
    print(
        json.dumps(
            {
                "spans": spans,
                "group_spans": PER_GROUP * BATCH,
                "spans_per_s": round(spans / wall),
                "cpu_s_per_10k": round((cpu["mapping"] + cpu["write"]) / spans * 10_000, 3),
                **per_10k,
                "stored": stored,
                "set_aside": set_aside,
                "llm_calls": llm_calls,
                "load_1min": [load_start, load_1min()],
            }
        )
    )


if __name__ == "__main__":
    main()
