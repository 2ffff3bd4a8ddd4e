"""One benchmark case (database x size) in its own process, so peak RSS is its own.

Prints one JSON list of result entries on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from observatory_core.demo.load import load_demo
from observatory_core.permissions import Role
from observatory_core.scope import Scope
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.summary import home_summary, period_stats, requests_per_hour

END = datetime(2026, 11, 4, 15, tzinfo=UTC)  # a Wednesday afternoon: typical traffic
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_url(db: str, size: int, folder: str) -> str:
    if db == "sqlite":
        import pathlib

        path = pathlib.Path(folder) / f"bench_{size}.db"
        for suffix in ("", "-wal", "-shm"):
            pathlib.Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    name = f"obs_bench_{size}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm caches and connections, as a returning user would
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return statistics.median(samples), p95


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--folder", default="bench/data")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    url = fresh_url(args.db, args.size, args.folder)
    engine = get_engine(url)
    upgrade(engine)
    base = {"database": args.db, "size": args.size}
    out = []

    report = load_demo(engine, spans=args.size, days=30, seed=7, end=END)
    if args.db == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE spans"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
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
    ops = {
        "home_summary": lambda: home_summary(engine, scope, now=END),
        "home_period_stats_24h": lambda: period_stats(engine, scope, END - day, END),
        "home_requests_per_hour_24h": lambda: requests_per_hour(engine, scope, END - day, END),
    }
    rows_in_window = period_stats(engine, scope, END - day, END).requests
    for name, fn in ops.items():
        median, p95 = timed(fn, args.runs)
        out.append(
            {
                **base,
                "operation": name,
                "median_ms": median,
                "p95_ms": p95,
                "rows_per_s": rows_in_window / (median / 1000) if median else None,
                "rows": rows_in_window,
                "runs": args.runs,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
