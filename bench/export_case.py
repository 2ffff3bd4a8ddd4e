"""Export benchmark: the worker writing CSV.gz next to PostgreSQL's own COPY piped to gzip.

Runs in its own process (peak RSS is the worker's), against a database `bench.case` built.
Prints one JSON list of result entries.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.exports.jobs import EXPORT_DEFAULT_FIELDS, create_export
from observatory_core.exports.worker import WorkerConfig, claim_next, run_job
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.engine import get_engine
from observatory_core.storage.schema import audit_log, export_jobs


def export_once(engine, org_id: int = 1) -> dict:
    """One CSV.gz export of every span of `org_id` through the export job code (made, claimed
    and run as the worker runs it; the rows read where `span_reads` says): its seconds, rows
    and file size. The database's earlier jobs and audit rows are deleted first, so the job
    claimed is this one."""
    with engine.begin() as conn:
        conn.execute(delete(export_jobs))
        conn.execute(delete(audit_log))
    scope = Scope(org_id=org_id, role=Role.ADMIN, username="bench")
    out_dir = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        job = create_export(
            engine,
            scope,
            FilterSpec(relative=None),
            fmt="csv",
            compression="gzip",
            now=datetime.now(UTC),
        )
        config = WorkerConfig(export_dir=out_dir)
        claimed = claim_next(engine, config)
        started = time.perf_counter()
        status = run_job(engine, claimed, config)
        seconds = time.perf_counter() - started
        with engine.connect() as conn:
            done = (
                conn.execute(export_jobs.select().where(export_jobs.c.id == job["id"]))
                .mappings()
                .one()
            )
    finally:
        for f in out_dir.iterdir():
            f.unlink()
        out_dir.rmdir()
    assert status == "completed", done["error_message"]
    return {"seconds": seconds, "rows": done["rows_written"], "file_size": done["file_size"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    engine = get_engine(args.url)
    export = export_once(engine)
    seconds = export["seconds"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = export["rows"]
    # Baseline: the database's own COPY of the same rows and columns, piped through gzip.
    db = args.url.rsplit("/", 1)[1]
    cols = ", ".join(EXPORT_DEFAULT_FIELDS)
    sql = (
        f"COPY (SELECT {cols} FROM spans WHERE org_id = 1 ORDER BY start_time, id) "
        "TO STDOUT WITH (FORMAT csv, HEADER)"
    )
    t = time.perf_counter()
    subprocess.run(
        f'psql -h 127.0.0.1 -U postgres -d {db} -c "{sql}" | gzip -6 > /dev/null',
        shell=True,
        check=True,
    )
    copy_seconds = time.perf_counter() - t
    base = {"database": "postgresql", "size": args.size, "rows": rows, "runs": 1}
    print(
        json.dumps(
            [
                {
                    **base,
                    "operation": "export_csv_gzip_worker",
                    "median_ms": seconds * 1000,
                    "p95_ms": seconds * 1000,
                    "rows_per_s": rows / seconds,
                    "peak_rss_mb": rss,
                    "file_mb": export["file_size"] / 2**20,
                },
                {
                    **base,
                    "operation": "export_copy_to_stdout_gzip_baseline",
                    "median_ms": copy_seconds * 1000,
                    "p95_ms": copy_seconds * 1000,
                    "rows_per_s": rows / copy_seconds,
                    "peak_rss_mb": None,
                    "ratio_worker_to_copy": (rows / seconds) / (rows / copy_seconds),
                },
            ]
        )
    )


if __name__ == "__main__":
    main()
