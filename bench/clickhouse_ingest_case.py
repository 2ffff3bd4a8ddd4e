"""OTLP ingest into the ClickHouse span store on chDB (issue 17, docs/span-store-internals.md
"Writes and the write turn"), next to a plain insert of the same rows.

The real server (`streamlit run server.py`, no embedded worker) with `DATABASE_URL` on a SQLite
file of its own and `OBSERVATORY_SPAN_STORE=chdb://<folder>`; four clients (threads with
keep-alive connections) post the OTLP case's pre-encoded protobuf batches of 512 new spans
(`bench/ingest_case.py`: agent traces of a root, an embedding and two chats) for a fixed time.
The figure is stored spans per second (a 200 means written) and the request latency
percentiles. The baseline then maps the same requests in this process (the receiver's mapping)
and writes their rows with `storage/clickhouse/writes.write_spans` (the stored-span check, the
insert, the views) into a fresh folder in batches of 50,000: what the store alone takes. The
1-minute load average is recorded at the start and the end of each, and the server's peak RSS
(sampled every 200 ms while the clients post) and its CPU seconds (user and system, all its
threads, chDB's included) per 10,000 spans stored: on shared cores the rate follows the load,
the CPU less so.

    PYTHONPATH=. .venv/bin/python -m bench.clickhouse_ingest_case [--seconds 30] > out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from bench.case import load_1min
from bench.ingest_case import BATCH, build_bodies, run_clients
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.tenancy import ensure_org, ensure_project
from observatory_core.ingest.apikeys import create_key
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade

DATABASE = "chdb"


def _baseline(engine, org_id: int, bodies: list[bytes], folder: Path) -> tuple[float, int]:
    """Rows/s of `write_spans` alone for the rows the bodies map to, and how many rows."""
    from observatory_core.ingest.apikeys import KeyInfo
    from observatory_core.ingest.otlp import PROTOBUF, parse_request
    from observatory_core.ingest.receiver import Receiver
    from observatory_core.storage.clickhouse.connect import open_span_store
    from observatory_core.storage.clickhouse.writes import write_spans

    receiver = Receiver(engine)
    key = KeyInfo(id=0, org_id=org_id, project_id=None, scopes=frozenset({"ingest"}))
    rows = []
    for body in bodies:
        decoded = receiver.map_request(
            parse_request(body, PROTOBUF), key, PROTOBUF, datetime.now(UTC)
        )
        rows += decoded.rows
    store = open_span_store(f"chdb://{folder}/baseline")
    try:
        started = time.perf_counter()
        written = write_spans(store, rows)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    return written / seconds, written


@contextmanager
def scratch_app(slug: str, name: str) -> Iterator[tuple[Path, Engine, int]]:
    """A throwaway folder under bench/data with a migrated SQLite DATABASE_URL and one org
    with its default project (the folder is removed after)."""
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent / "data") as tmp:
        folder = Path(tmp)
        engine = get_engine(f"sqlite:///{folder / 'observatory.db'}")
        upgrade(engine)
        with engine.begin() as conn:
            org_id = ensure_org(conn, slug, name)
            ensure_project(conn, org_id, "default", "Default")
        yield folder, engine, org_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    from bench.grid_case import RssWatch, server_process
    from tests.live_server import running_server

    with scratch_app("bench-ingest", "Bench ingest") as (folder, engine, org_id):
        key = create_key(engine, Scope(org_id, Role.ADMIN, username="bench"), "bench")
        per_client = int(args.seconds * 30_000 / BATCH / args.clients) + 1  # more than is sent
        bodies = [build_bodies(per_client, seed=1 + c) for c in range(args.clients)]
        load_start = load_1min()
        with running_server(
            f"sqlite:///{folder / 'observatory.db'}",
            folder,
            OBSERVATORY_EMBEDDED_WORKER="0",
            OBSERVATORY_SPAN_STORE=f"chdb://{folder}/spans",
        ) as base:
            port = int(base.rsplit(":", 1)[1])
            # the server's, every 200 ms: a finer poll takes CPU from the clients on 2 cores
            server = server_process(port)
            rss = RssWatch(server, interval=0.2)
            cpu_start = sum(server.cpu_times()[:2])
            results, elapsed = run_clients(port, key, bodies, args.seconds, warm_seconds=60)
            cpu = sum(server.cpu_times()[:2]) - cpu_start  # the warm-up's 1,024 spans too
            rss.stop()
        load_end = load_1min()
        done = [r for rs in results for r in rs]
        ok = sorted(latency for status, latency in done if status == 200)
        sent = [bodies[c][: len(results[c])] for c in range(args.clients)]
        base_load_start = load_1min()
        base_rate, base_rows = _baseline(
            engine, org_id, [b for bs in sent for b in bs], folder / "baseline"
        )
        base_load_end = load_1min()
        engine.dispose()

    def p(q: float) -> float:
        return ok[min(len(ok) - 1, int(q * len(ok)))] * 1000

    common = {"database": DATABASE, "size": len(ok) * BATCH, "peak_rss_mb": None}
    print(
        json.dumps(
            [
                {
                    **common,
                    "operation": "clickhouse_ingest_otlp_4_clients",
                    "median_ms": statistics.median(ok) * 1000,
                    "p95_ms": p(0.95),
                    "p99_ms": p(0.99),
                    "rows_per_s": len(ok) * BATCH / elapsed,
                    "requests": len(ok),
                    "refused": len(done) - len(ok),
                    "seconds": round(elapsed, 1),
                    "load_1min": [load_start, load_end],
                    "peak_rss_mb": rss.peak / 2**20,
                    "server_cpu_s_per_10k": cpu / (len(ok) * BATCH + 2 * BATCH) * 10_000,
                },
                {
                    **common,
                    "operation": "clickhouse_ingest_insert_baseline",
                    "median_ms": None,
                    "p95_ms": None,
                    "rows_per_s": base_rate,
                    "rows": base_rows,
                    "load_1min": [base_load_start, base_load_end],
                },
            ]
        )  # one line: bench/run.py reads the last line
    )


if __name__ == "__main__":
    main()
