"""One benchmark case (database x size) in its own process, so peak RSS is its own.

Prints one JSON list of result entries on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.demo.load import load_demo
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.reports.overview import period_overview
from observatory_core.reports.summary import home_summary, period_stats, requests_per_hour
from observatory_core.runtime.allocator import keep_freed_memory
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.traces.detail import get_trace
from observatory_core.traces.query import list_spans

END = datetime(2026, 11, 4, 15, tzinfo=UTC)  # a Wednesday afternoon: typical traffic
LATE = END + timedelta(minutes=17, seconds=23)
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def load_1min() -> float:
    """The machine's 1-minute load average, recorded beside the figures (docs/benchmarks.md)."""
    return round(os.getloadavg()[0], 2)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_url(db: str, size: int, folder: str, stem: str = "bench") -> str:
    """An empty database for `size` spans; `stem` names a case's own (a parallel run of another
    case keeps its database)."""
    if db == "sqlite":
        import pathlib

        path = pathlib.Path(folder) / f"{stem}_{size}.db"
        for suffix in ("", "-wal", "-shm"):
            pathlib.Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    name = f"obs_{stem}_{size}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def demo_org_and_size(engine) -> tuple[int, int]:
    """The demo org's id and how many spans the database really holds (what figures report)."""
    from sqlalchemy import select

    from observatory_core.storage.schema import orgs

    with engine.connect() as conn:
        org_id = conn.execute(select(orgs.c.id).where(orgs.c.slug == "acme")).scalar_one()
        size = conn.exec_driver_sql("SELECT count(*) FROM spans").scalar()
    return org_id, size


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm caches and connections, as a returning user would
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return median_p95(samples)


def timed_moving(op_at: Callable[[int], Callable[[], object]], runs: int) -> tuple:
    """Median and p95 ms of `runs` calls after a warm-up, call k made by `op_at(k)` (its window
    ending k seconds after the warm-up's, as the app's "now" moves between requests: no cache
    keyed on the query's text or condition answers a repeat), and the warm-up's answer."""
    first = op_at(0)()
    samples = []
    for k in range(1, runs + 1):
        fn = op_at(k)
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return (*median_p95(samples), first)


def timed_entries(
    cases: dict[str, Callable[[], object]], db: str, size: int, runs: int
) -> list[dict]:
    """Each case timed (`timed`) as a results.json entry."""
    entries = []
    for name, fn in cases.items():
        median, p95 = timed(fn, runs)
        entries.append(
            {
                "operation": name,
                "database": db,
                "size": size,
                "median_ms": median,
                "p95_ms": p95,
                "rows_per_s": None,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    return entries


def median_p95(samples: list[float]) -> tuple[float, float]:
    """The median and the p95 (the nearest run's) of timings in ms."""
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return statistics.median(samples), p95


def write_trace(engine, spans_in_trace: int) -> str:
    """One agent trace of `spans_in_trace` spans in org 1, for the open-a-trace timing."""
    from observatory_core.ingest.persist import write_spans
    from observatory_core.ingest.spanrows import complete_row

    trace_id = "b" * 32
    start = END - timedelta(hours=2)
    rows = [
        complete_row(
            {
                "org_id": 1,
                "project_id": 1,
                "trace_id": trace_id,
                "span_id": f"{i + 1:016x}",
                "parent_span_id": None if i == 0 else f"{1:016x}",
                "name": f"step {i}",
                "operation": "invoke_agent" if i == 0 else "chat",
                "status": "ok",
                "start_time": start + timedelta(milliseconds=100 * i),
                "end_time": start + timedelta(milliseconds=100 * i + 90),
                "cost_source": "computed",
                "input_text": "benchmark step " * 20,
                "output_text": "answer " * 30,
            },
            16_000,
        )
        for i in range(spans_in_trace)
    ]
    write_spans(engine, rows)
    return trace_id


def read_ops(
    engine, scope: Scope, big_trace: str, end: datetime = END
) -> dict[str, Callable[[], object]]:
    """The reads the pages and the API make, by operation name, through the app's own code
    (`engine` is the one spans are read from: DATABASE_URL's, or the span store's); their
    "now" is `end` (`end` + 17 min 23 s for the metrics and the Overview)."""
    now, late = end, end + (LATE - END)
    day = timedelta(hours=24)
    last_day = FilterSpec(relative="24h")
    week_errors = FilterSpec(relative="7d", statuses=("error",))
    model_month = FilterSpec(
        relative="30d", models=("claude-sonnet-4-5",), environments=("production",)
    )
    hourly = MetricQuery(
        series=("request_count.count", "duration_ms.avg", "duration_ms.p95", "total_cost.sum"),
        filters=FilterSpec(relative="30d"),
        bucket="1hour",
        group_by=("model",),
    )
    return {
        "home_summary": lambda: home_summary(engine, scope, now=now),
        "home_period_stats_24h": lambda: period_stats(engine, scope, now - day, now),
        "home_requests_per_hour_24h": lambda: requests_per_hour(engine, scope, now - day, now),
        "explorer_first_page_24h_by_time": lambda: list_spans(engine, scope, last_day, now=now),
        "explorer_first_page_7d_errors_by_cost": lambda: list_spans(
            engine, scope, week_errors, sort="total_cost_usd", now=now
        ),
        "explorer_first_page_30d_model_env_by_duration": lambda: list_spans(
            engine, scope, model_month, sort="duration_ms", now=now
        ),
        "explorer_first_page_7d_model_by_time": lambda: list_spans(
            engine, scope, FilterSpec(relative="7d", models=("gpt-4o",)), now=now
        ),
        "explorer_first_page_traces_24h_by_time": lambda: list_spans(
            engine, scope, last_day, mode="traces", now=now
        ),
        "explorer_first_page_traces_24h_by_tree_cost": lambda: list_spans(
            engine, scope, last_day, mode="traces", sort="total_cost_usd", now=now
        ),
        "explorer_search_all_time": lambda: list_spans(
            engine, scope, FilterSpec(relative=None, search="refund"), now=now
        ),
        "explorer_search_30d_phrase": lambda: list_spans(
            engine, scope, FilterSpec(relative="30d", search="rate limits"), now=now
        ),
        "explorer_open_50_span_trace": lambda: get_trace(engine, scope, big_trace),
        # "now" a few minutes past the hour, as for a real user: the range has ragged edges
        "metrics_30d_hourly_by_model": lambda: run_metrics(engine, scope, hourly, now=late),
        "metrics_30d_hourly_by_model_raw": lambda: run_metrics(
            engine, scope, hourly, now=late, force="raw"
        ),
        "overview_7d_with_comparison": lambda: period_overview(
            engine, scope, FilterSpec(relative="7d"), now=late
        ),
        "overview_7d_with_comparison_raw": lambda: period_overview(
            engine, scope, FilterSpec(relative="7d"), now=late, force="raw"
        ),
    }


def build_database(db: str, size: int, folder: str = "bench/data"):
    """A fresh database of `size` demo spans, vacuumed and analysed: what every case measures."""
    engine = get_engine(fresh_url(db, size, folder))
    upgrade(engine)
    report = load_demo(engine, spans=size, days=30, seed=7, end=END)
    analyse(engine, db)
    return engine, report


def analyse(engine, db: str) -> None:
    if db == "postgresql":
        # Steady state, as autovacuum leaves it: otherwise its work on the freshly loaded
        # tables runs during (and slows) the measurements, and the planner lacks statistics.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--folder", default="bench/data")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    engine, report = build_database(args.db, args.size, args.folder)
    base = {"database": args.db, "size": args.size}
    out = []
    out.append(
        {
            **base,
            "operation": "demo_load",
            "median_ms": report.seconds * 1000,
            "p95_ms": report.seconds * 1000,
            "rows_per_s": report.rate,
            "rows": report.spans,
            "runs": 1,
            "peak_rss_mb": peak_rss_mb(),
        }
    )

    scope = Scope(org_id=1, role=Role.ADMIN)
    day = timedelta(hours=24)
    big_trace = write_trace(engine, spans_in_trace=50)
    ops = read_ops(engine, scope, big_trace)
    rows_in_window = period_stats(engine, scope, END - day, END).requests
    # The process as server.py runs it: freed memory kept, start-up objects out of the collector's
    # sight (the timings are of the calls the server makes, not of a cold interpreter).
    keep_freed_memory()
    gc.collect()
    gc.freeze()
    for name, fn in ops.items():
        # the raw baselines take seconds each; a few runs show the gain well enough
        runs = 5 if name.endswith("_raw") else args.runs
        median, p95 = timed(fn, runs)
        rows = rows_in_window if name.startswith("home") else None
        out.append(
            {
                **base,
                "operation": name,
                "median_ms": median,
                "p95_ms": p95,
                "rows_per_s": rows / (median / 1000) if rows and median else None,
                "rows": rows,
                "runs": runs,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
