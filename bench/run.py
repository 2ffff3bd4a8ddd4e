"""Runs every benchmark case and writes bench/results.json and docs/benchmarks.md.

`BENCH_SIZES=100000 make bench` runs a subset; by default 100k and 1M spans on both databases.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.clickhouse_app_case import PREFIX as APP_PREFIX
from bench.doc import fmt, write_doc
from bench.families import FAMILIES, QUERIES, family, main_case

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"


def _run(label: str, module: str, *args: str) -> list[dict]:
    """One case in its own process (so peak RSS is its own); it prints a JSON list."""
    print(f"bench: {label} ...", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"bench {label} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(db: str, size: int) -> list[dict]:
    return _run(f"{db} with {size:,} spans", "bench.case", "--db", db, "--size", str(size))


def run_pg_case(label: str, module: str, size: int) -> list[dict]:
    """A case that works on the PostgreSQL database the main case built for `size` spans."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/obs_bench_{size}"
    return _run(
        f"{label} on postgresql with {size:,} spans", module, "--url", url, "--size", str(size)
    )


def run_sketch(db: str, size: int) -> list[dict]:
    """The latency sketch's bytes per rollup row, percentile charts and rollup rebuild, on the
    database the main case built for `size` spans on `db`."""
    url = (
        f"sqlite:///{ROOT / 'bench' / 'data' / f'bench_{size}.db'}"
        if db == "sqlite"
        else f"postgresql+psycopg://postgres@127.0.0.1:5432/obs_bench_{size}"
    )
    return _run(
        f"sketch on {db} with {size:,} spans",
        "bench.sketch_case",
        "--url",
        url,
        "--size",
        str(size),
    )


def run_grid(db: str, size: int) -> list[dict]:
    """The bounded-reads grid through the real server on `db`'s database of `size` spans (built
    as the main case builds it if it is missing)."""
    return _run(
        f"grid on {db} with {size:,} spans", "bench.grid_case", "--db", db, "--size", str(size)
    )


def chdb_sizes_of_run(sizes: list[int]) -> list[int]:
    """BENCH_CHDB_SIZES: the chDB sizes the app case measures (default the largest size)."""
    raw = os.environ.get("BENCH_CHDB_SIZES", str(max(sizes)))
    try:
        return [int(s) for s in raw.split(",")]
    except ValueError:
        sys.exit(f"BENCH_CHDB_SIZES must be span counts separated by commas; got {raw!r}.")


def kept_chdb_sizes(earlier: dict, sizes: list[int]) -> list[dict]:
    """The app case's chDB figures at sizes this run does not measure (BENCH_CHDB_SIZES
    without 10M: a 10M folder takes most of an hour to load), kept with the time they were
    measured at, which docs/benchmarks.md prints over their column."""
    measured = chdb_sizes_of_run(sizes)
    when = earlier["meta"].get("clickhouse_measured_at")
    return [
        {"measured_at": when, **e}
        for e in earlier["results"]
        if e["operation"].startswith(APP_PREFIX)
        and e["database"] == "chdb"
        and e["size"] not in measured
    ]


def run_clickhouse_app(dbs: list[str], sizes: list[int]) -> list[dict]:
    """Issue 17's figures through the app's code (`bench/clickhouse_app_case.py`): on chDB at
    each of BENCH_CHDB_SIZES (default the largest size; "1000000,10000000" for the issue's
    10M), and on the main case's PostgreSQL database of the largest size. BENCH_CHDB_REUSE=1
    reads a chDB folder loaded before (its load's figures as measured then) instead of
    loading it again; BENCH_CHDB_RUNS the runs of each read per size ("30,10")."""
    chdb_sizes = chdb_sizes_of_run(sizes)
    raw = ",".join(str(s) for s in chdb_sizes)
    # BENCH_CHDB_RUNS: the timed runs of each read, one number per size (default 30 each):
    # at 10M, 30 runs of every read take most of an hour
    raw_runs = os.environ.get("BENCH_CHDB_RUNS", ",".join("30" for _ in chdb_sizes))
    try:
        runs = [int(r) for r in raw_runs.split(",")]
    except ValueError:
        runs = []
    if len(runs) != len(chdb_sizes) or min(runs) < 3:
        sys.exit(
            f"BENCH_CHDB_RUNS must be one number of runs (3 or more) per size of "
            f"BENCH_CHDB_SIZES ({raw}); got {raw_runs!r}."
        )
    out = [
        e
        for size, size_runs in zip(chdb_sizes, runs, strict=True)
        for e in _run(
            f"the app on chdb with {size:,} spans",
            "bench.clickhouse_app_case",
            "--store",
            "chdb",
            "--size",
            str(size),
            "--runs",
            str(size_runs),
            *(["--reuse"] if os.environ.get("BENCH_CHDB_REUSE") else []),
        )
    ]
    if "postgresql" in dbs:
        out += _run(
            f"the app on postgresql with {max(sizes):,} spans",
            "bench.clickhouse_app_case",
            "--store",
            "postgresql",
            "--size",
            str(max(sizes)),
        )
    return out


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "100000,1000000").split(",")]
    dbs = os.environ.get("BENCH_DATABASES", "sqlite,postgresql").split(",")
    # "exports" or "ingest": run only that family against the databases of an earlier run and
    # keep the other figures as they were.
    only = os.environ.get("BENCH_ONLY")
    if only and only not in FAMILIES and only != QUERIES:
        sys.exit(f"BENCH_ONLY must be one of {QUERIES}, {', '.join(FAMILIES)}; got {only!r}.")
    if only == QUERIES:  # the main case's figures (load, explorer, metrics, Overview, Home)
        entries = [
            e
            for e in json.loads(RESULTS.read_text())["results"]
            if not (main_case(e) and e["database"] in dbs and e["size"] in sizes)
        ]
        entries += [e for size in sizes for db in dbs for e in run_case(db, size)]
    elif only:
        earlier = json.loads(RESULTS.read_text())
        entries = [
            e
            for e in earlier["results"]
            # the family's figures on the databases of this run are measured again
            if not (family(e["operation"]) == only and e["database"] in (*dbs, "chdb"))
        ]
        if only == "clickhouse":
            entries += kept_chdb_sizes(earlier, sizes)
    else:
        entries = [e for size in sizes for db in dbs for e in run_case(db, size)]
    if "postgresql" in dbs and only in (None, "exports"):
        entries += [e for size in sizes for e in run_pg_case("export", "bench.export_case", size)]
    if "postgresql" in dbs and only in (None, "alerts"):
        entries += run_pg_case("alerts", "bench.alerts_case", max(sizes))
    if "postgresql" in dbs and only in (None, "api"):
        entries += run_pg_case("API", "bench.api_case", max(sizes))
    if only in (None, "sketch"):  # before ingest, which adds spans to the PostgreSQL database
        entries += [e for size in sizes for db in dbs for e in run_sketch(db, size)]
    if only in (None, "changes"):  # What changed, on the main case's databases
        entries += [
            e
            for db in dbs
            for e in _run(
                f"what changed on {db} with {max(sizes):,} spans",
                "bench.changes_case",
                "--db",
                db,
                "--size",
                str(max(sizes)),
            )
        ]
    if only in (None, "people"):  # databases of its own, at each size
        entries += [
            e
            for size in sizes
            for db in dbs
            for e in _run(
                f"users and sessions on {db} with {size:,} spans",
                "bench.people_case",
                "--db",
                db,
                "--size",
                str(size),
            )
        ]
    if only in (None, "dashboard"):  # the main case's databases, at each size
        entries += [
            e
            for size in sizes
            for db in dbs
            for e in _run(
                f"dashboards on {db} with {size:,} spans",
                "bench.dashboard_case",
                "--db",
                db,
                "--size",
                str(size),
            )
        ]
    if "postgresql" in dbs and only in (None, "remap"):  # a database of its own
        entries += _run("remap on postgresql", "bench.remap_case")
    if "postgresql" in dbs and only in (None, "dims"):  # a database of its own per size
        entries += [e for size in sizes for e in run_pg_case("dims", "bench.dims_case", size)]
    if "postgresql" in dbs and only in (None, "dashboard_ui"):  # the dims case's database
        entries += [
            e
            for size in sizes
            for e in _run(
                f"dashboards in the browser on postgresql with {size:,} spans",
                "bench.dashboard_browser_case",
                "--url",
                f"postgresql+psycopg://postgres@127.0.0.1:5432/obs_bench_dims_{size}",
                "--size",
                str(size),
            )
        ]
    if only in (None, "retention"):  # databases of its own, at the largest size
        entries += [
            e
            for db in dbs
            for e in _run(
                f"retention on {db} with {max(sizes):,} spans",
                "bench.retention_case",
                "--db",
                db,
                "--spans",
                str(max(sizes)),
            )
        ]
    if only in (None, "clickhouse"):  # the ClickHouse span store in-process (issue 17)
        entries += _run(
            f"clickhouse on chdb with {max(sizes):,} spans",
            "bench.clickhouse_case",
            "--size",
            str(max(sizes)),
        )
        entries += run_clickhouse_app(dbs, sizes)
        entries += _run("OTLP ingest into chdb", "bench.clickhouse_ingest_case")
        if "postgresql" in dbs:  # migrate-spans from the main case's database (read-only)
            entries += _run(
                f"migrate-spans from postgresql into chdb with {max(sizes):,} spans",
                "bench.clickhouse_migrate_case",
                "--size",
                str(max(sizes)),
            )
    # After every family that reads the main case's databases (it declares user_id there, which
    # adds rollup rows), before ingest (which adds spans to the PostgreSQL one).
    if only in (None, "grid"):
        entries += [e for db in dbs for e in run_grid(db, max(sizes))]
    if "postgresql" in dbs and only in (None, "ingest"):  # last: it adds spans to the database
        entries += run_pg_case("OTLP ingest", "bench.ingest_case", max(sizes))
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    earlier = json.loads(RESULTS.read_text())["meta"] if only else {}
    meta = {
        # In BENCH_ONLY mode the other figures keep the time they were measured at.
        "measured_at": now if only in (None, QUERIES) else earlier.get("measured_at", now),
        **{
            f"{family}_measured_at": now
            if only in (None, family)
            else earlier.get(f"{family}_measured_at")
            for family in FAMILIES
        },
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    RESULTS.write_text(json.dumps({"meta": meta, "results": entries}, indent=2) + "\n")
    write_doc(entries, meta)
    for e in entries:
        print(
            f"{e['operation']:<28} {e['database']:<10} {e['size']:>9,}  median {fmt(e['median_ms'])} ms  "
            f"p95 {fmt(e['p95_ms'])} ms  {fmt(e['rows_per_s'], 0)} rows/s  RSS {fmt(e['peak_rss_mb'], 0)} MB"
        )


if __name__ == "__main__":
    main()
