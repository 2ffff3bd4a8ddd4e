"""Issue 17's figures through the app's own code, on the chDB span store and on PostgreSQL, so
docs/benchmarks.md can show them side by side (`BENCH_ONLY=clickhouse`, bench/run.py).

One store per process (peak RSS is that store's reading process; chDB holds one folder per
process). The same reads on both, for the demo org (acme), at the demo data's end
(`bench.case.END`; "now" 17 minutes past it for the metrics and the Overview):

- the explorer's first pages in spans and traces mode, the text searches, a 50-span trace
  opened, the Metrics page's 30-day hourly series by model, the Overview's 7 days with the 7
  before (`bench.case.read_ops`: what the pages' loaders and the API call, given the engine
  `storage/span_reads.py` gives them);
- an export of every span of the org to CSV.gz through the export job code
  (`bench.export_case.export_once`: made, claimed and run as the worker does);
- one evaluation cycle of 100 alert rules (`bench.alerts_case`), the rules in DATABASE_URL,
  their series read from the span store (as `alerts/loops.alert_round` does);
- bytes on disk per span (spans, trace totals and rollups, indexes included on PostgreSQL).

Each figure carries a `check` (rows on a page, the series' and the Overview's request counts
and cost, the export's rows, the alert groups) that must be equal on both stores for the same
data: the demo generator is seeded, and both hold the main case's 50-span trace. An empty
answer (no trace, a page, series or export of no rows) stops the case: it would be "equal" on
both stores and measure nothing.

Each timed read ends its window a second after the one before (`bench.case.timed_moving`), as
the app's "now" moves between requests, so no cache keyed on the query (chDB's query
condition cache, on by default) answers a repeat; the all-time search and the trace have no
window, and repeat the same query. The alert cycles move the same way. On PostgreSQL the
server's backends' peak RSS is sampled beside the reading process's (`bench/backend_rss.py`).

`--store chdb`: a folder of its own, bench/data/clickhouse_app_<size>, holding the SQLite
DATABASE_URL (orgs, export jobs, alert rules) and the chDB span store, loaded by `load_demo`
with `OBSERVATORY_SPAN_STORE` set (the app's ingest path, in a child process whose figure is
`clickhouse_app_demo_load`) unless `--reuse` finds it loaded. `--store postgresql`: the main
case's database of this size (or `--url`), never built here; the case adds its 100 alert
rules (as bench/alerts_case.py leaves them), replaces its export jobs, and writes the main
case's 50-span trace if it lacks it (a database made by `build_database` alone);
`--reads-only` writes nothing.

    PYTHONPATH=. .venv/bin/python -m bench.clickhouse_app_case --store chdb --size 1000000
    PYTHONPATH=. .venv/bin/python -m bench.clickhouse_app_case --store postgresql --size 1000000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, text

from bench.alerts_case import cycles, make_rules
from bench.app_checks import check_of, empty
from bench.backend_rss import BackendRss
from bench.case import END, load_1min, median_p95, peak_rss_mb, read_ops, timed_moving, write_trace
from bench.clickhouse_app_stores import (
    PG_SPAN_TABLES,
    SPAN_TABLES,
    acme_is_org_1,
    pg_disk_bytes_per_span,
    pg_url,
    rewrite_old_parts,
    settle,
)
from bench.clickhouse_case import disk_bytes
from bench.export_case import export_once
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.settings import get_settings
from observatory_core.demo.load import load_demo
from observatory_core.runtime.allocator import keep_freed_memory
from observatory_core.storage.clickhouse.current import close_span_stores, span_store
from observatory_core.storage.clickhouse.ddl import applied_versions
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import current_revision, head_revision, upgrade
from observatory_core.storage.schema import orgs
from observatory_core.storage.span_reads import span_reads

PREFIX = "clickhouse_app_"
TRACE = "b" * 32  # the main case's 50-span trace (`bench.case.write_trace`)
READS = (
    "explorer_first_page_24h_by_time",
    "explorer_first_page_7d_errors_by_cost",
    "explorer_first_page_30d_model_env_by_duration",
    "explorer_first_page_7d_model_by_time",
    "explorer_first_page_traces_24h_by_time",
    "explorer_first_page_traces_24h_by_tree_cost",
    "explorer_search_all_time",
    "explorer_search_30d_phrase",
    "explorer_open_50_span_trace",
    "metrics_30d_hourly_by_model",
    "overview_7d_with_comparison",
)
ROOT = Path(__file__).resolve().parent.parent


def chdb_folder(folder: str, size: int) -> Path:
    return (ROOT / folder / f"clickhouse_app_{size}").resolve()


def _use_store(path: Path) -> str:
    """DATABASE_URL's URL in `path`, with the span store set for this process (before any
    setting is read)."""
    os.environ["OBSERVATORY_SPAN_STORE"] = f"chdb://{path / 'spans'}"
    get_settings.cache_clear()
    return f"sqlite:///{path / 'observatory.db'}"


def load_chdb(folder: str, size: int) -> list[dict]:
    """The child process: the demo loaded through the app's ingest path into a fresh folder,
    the main case's 50-span trace added; the load's figure and the bytes on disk per span."""
    path = chdb_folder(folder, size)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    engine = get_engine(_use_store(path))
    upgrade(engine)
    load_start = load_1min()
    report = load_demo(engine, spans=size, days=30, seed=7, end=END)
    load_end = load_1min()
    acme_is_org_1(engine)
    write_trace(engine, spans_in_trace=50)
    store = span_store()
    merges_waited, parts = settle(store)
    version = max(applied_versions(store))  # parts written under it (`_rewrite_once`)
    written = report.spans + 50
    tables = ", ".join(f"'{t}'" for t in SPAN_TABLES)
    per_span = disk_bytes(store, tables) / written
    close_span_stores()
    base = {
        "database": "chdb",
        "size": size,
        "spans": written,
        "peak_rss_mb": peak_rss_mb(),
        "merges_waited_s": merges_waited,
        "active_parts": parts,
    }
    figures = [
        {
            **base,
            "operation": f"{PREFIX}demo_load",
            "median_ms": report.seconds * 1000,
            "p95_ms": report.seconds * 1000,
            "rows_per_s": report.rate,
            "rows": report.spans,
            "runs": 1,
            "load_1min": [load_start, load_end],
        },
        {
            **base,
            "operation": f"{PREFIX}disk_bytes_per_span",
            "median_ms": None,
            "p95_ms": None,
            "rows_per_s": None,
            "rows": per_span,
            "tables": list(SPAN_TABLES),
        },
    ]
    # A reuse of the folder (--reuse) reports the load's own figures, as measured then.
    loaded = {
        "spans": written,
        "active_parts": parts,
        "figures": figures,
        "schema_version": version,
    }
    (path / "loaded.json").write_text(json.dumps(loaded))
    return figures


def _rewrite_once(path: Path) -> float | None:
    """The folder's parts rewritten with schema version 10's codecs when it was loaded before
    it (`rewrite_old_parts`), recorded in its loaded.json so a later --reuse does not again.
    Answers the rewrite's seconds, this run's or the earlier run's; None when never needed."""
    loaded = json.loads((path / "loaded.json").read_text())
    seconds = rewrite_old_parts(span_store(), loaded)
    if seconds is None:
        return loaded.get("parts_rewritten_s")
    (path / "loaded.json").write_text(json.dumps({**loaded, "parts_rewritten_s": seconds}))
    return seconds


def _refuse_empty(name: str, check) -> None:
    if empty(check):
        sys.exit(
            f"{name} answered nothing ({check!r}) for the demo org at the demo data's end: "
            "both stores would agree on an empty answer, which measures nothing. Is the store "
            "loaded with the demo data (and the main case's 50-span trace)?"
        )


def measure(
    engine, reads, db: str, size: int, spans: int, runs: int, writes: bool = True
) -> list[dict]:
    """The reads, the export and the alert cycle (without `writes`, the reads alone: nothing
    written to `engine`), timed in this process; `size` is the size asked for (the doc's
    column), `spans` how many the store holds. On PostgreSQL the server's backends' peak RSS
    is sampled beside this process's."""
    with engine.connect() as conn:
        org_id = conn.execute(select(orgs.c.id).where(orgs.c.slug == "acme")).scalar_one()
    scope = Scope(org_id=org_id, role=Role.ADMIN)
    base = {"database": db, "size": size, "spans": spans}
    out = []
    server = BackendRss(engine) if db == "postgresql" else None

    def memory() -> dict:
        rss = {"peak_rss_mb": peak_rss_mb()}
        if server is not None:
            rss["server_peak_rss_mb"] = server.peak_mb
        return rss

    def op_at(name: str):
        return lambda k: read_ops(reads, scope, TRACE, end=END + timedelta(seconds=k))[name]

    # As server.py runs its process (bench/case.py): freed memory kept, start-up objects frozen.
    keep_freed_memory()
    gc.collect()
    gc.freeze()
    load_start = load_1min()
    for name in READS:
        try:
            median, p95, first = timed_moving(op_at(name), runs)
        except Exception as exc:  # noqa: BLE001 - a read the store refuses is a figure too
            out.append({**base, "operation": f"{PREFIX}{name}", **_refused(exc), **memory()})
            continue
        check = check_of(name, first)  # the warm-up's: the window ending at END on both stores
        _refuse_empty(name, check)
        out.append(
            {
                **base,
                "operation": f"{PREFIX}{name}",
                "median_ms": median,
                "p95_ms": p95,
                "rows_per_s": None,
                "runs": runs,
                "window_end_moves_s": 1,
                "check": check,
                **memory(),
            }
        )
    if writes:
        out += _export_and_alerts(engine, reads, org_id, base, runs, memory)
    if server is not None:
        server.stop()
    return _with_load(out, load_start)


def _refused(exc: Exception) -> dict:
    """A read the store refused (at 10M spans before schema version 7, a 30-day page's
    newest-copy pick passed the read's memory bound): no time, the engine's reason in one line."""
    text = str(getattr(exc, "orig", None) or exc)
    reason = next((line for line in text.splitlines() if "Exception:" in line), text)
    return {
        "median_ms": None,
        "p95_ms": None,
        "rows_per_s": None,
        "runs": 0,
        "check": None,
        "refused": reason.split("Exception:", 1)[-1].strip()[:300],
    }


def _export_and_alerts(engine, reads, org_id: int, base: dict, runs: int, memory) -> list[dict]:
    export = export_once(engine, org_id)
    _refuse_empty("the export", export["rows"])
    out = [
        {
            **base,
            "operation": f"{PREFIX}export_csv_gzip",
            "median_ms": export["seconds"] * 1000,
            "p95_ms": export["seconds"] * 1000,
            "rows_per_s": export["rows"] / export["seconds"],
            "rows": export["rows"],
            "runs": 1,
            "check": export["rows"],
            "file_mb": export["file_size"] / 2**20,
            **memory(),
        }
    ]
    make_rules(engine, org_id, 100)
    alert_runs = max(3, runs // 3)
    seconds, report = cycles(engine, alert_runs, spans=reads, step_s=1)
    median, p95 = median_p95(seconds)
    out.append(
        {
            **base,
            "operation": f"{PREFIX}alerts_cycle_100_rules",
            "median_ms": median,
            "p95_ms": p95,
            "rows_per_s": None,
            "runs": alert_runs,
            "cycle_now_moves_s": 1,
            "queries_per_cycle": report.queries,
            "check": [report.rules, report.groups],
            **memory(),
        }
    )
    return out


def _with_load(out: list[dict], load_start: float) -> list[dict]:
    """The figures with the 1-minute load average at their start and end."""
    load_end = load_1min()
    for e in out:
        e["load_1min"] = [load_start, load_end]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["chdb", "postgresql"], required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--folder", default="bench/data")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--url", help="postgresql: the database to read (default: the main case's)")
    parser.add_argument("--reuse", action="store_true", help="chdb: keep a folder already loaded")
    parser.add_argument(
        "--reads-only",
        action="store_true",
        help="no export and no alert rules: nothing written to the database (to check a "
        "database one may only read)",
    )
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    out: list[dict] = []
    if args.store == "chdb":
        if args.load_only:
            print(json.dumps(load_chdb(args.folder, args.size)))
            return
        path = chdb_folder(args.folder, args.size)
        if not (args.reuse and (path / "loaded.json").exists()):
            # a process of its own: the reading process's peak RSS is then the reads' alone
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.clickhouse_app_case",
                    "--store",
                    "chdb",
                    "--size",
                    str(args.size),
                    "--folder",
                    args.folder,
                    "--load-only",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                sys.exit(f"loading the chDB folder failed:\n{done.stderr[-3000:]}")
            out += json.loads(done.stdout.strip().splitlines()[-1])
        else:
            out += json.loads((path / "loaded.json").read_text()).get("figures", [])
        spans = json.loads((path / "loaded.json").read_text())["spans"]
        engine = get_engine(_use_store(path))
        reads = span_reads(engine)
        # a folder loaded before schema version 10 read on the codecs a store made now has
        rewritten = _rewrite_once(path)
        measured = measure(engine, reads, "chdb", args.size, spans, args.runs, not args.reads_only)
        out += [{**row, "parts_rewritten_s": rewritten} for row in measured]
    else:
        os.environ.pop("OBSERVATORY_SPAN_STORE", None)
        get_settings.cache_clear()
        engine = get_engine(pg_url(args.url, args.size, args.folder))
        # before any write or read: with a span store set (secrets.toml), write_trace would
        # send the trace to it and the reads would read it
        if span_reads(engine) is not engine:
            sys.exit("A span store is set (span_store in .streamlit/secrets.toml): unset it.")
        if current_revision(engine) != head_revision():
            sys.exit(
                f"The PostgreSQL database is at schema revision {current_revision(engine)}, "
                f"not this checkout's {head_revision()}: run the main case (or migrate it) first."
            )
        with engine.connect() as conn:
            spans = conn.exec_driver_sql("SELECT count(*) FROM spans").scalar()
            trace = conn.execute(
                text("SELECT count(*) FROM spans WHERE trace_id = :t"), {"t": TRACE}
            ).scalar()
        # the chDB folder holds it: without it the checks of the last 24 hours would differ
        if not trace and not args.reads_only:  # a database built by build_database alone
            acme_is_org_1(engine)
            write_trace(engine, spans_in_trace=50)
            spans += 50
        elif not trace:
            print(
                "warning: the database lacks the main case's 50-span trace (bench.case's "
                "write_trace); the checks of the last 24 hours will differ by its spans",
                file=sys.stderr,
            )
        out.append(
            {
                "operation": f"{PREFIX}disk_bytes_per_span",
                "database": "postgresql",
                "size": args.size,
                "spans": spans,
                "median_ms": None,
                "p95_ms": None,
                "rows_per_s": None,
                "rows": pg_disk_bytes_per_span(engine),
                "tables": list(PG_SPAN_TABLES),
                "main_case_trace": "added" if not trace and not args.reads_only else bool(trace),
                "peak_rss_mb": None,
            }
        )
        out += measure(
            engine, engine, "postgresql", args.size, spans, args.runs, not args.reads_only
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
