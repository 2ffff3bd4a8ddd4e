"""The bounded-reads grid (issue 25): every explorer and metrics shape through the real server.

Each shape is asked of the real server's HTTP API (so the read budget, the metrics caps and the
heavy-read limits apply, and the memory measured is the server's), one request at a time with
one admin key: one warm-up call, then timed runs. Every call ends its window a second later than
the one before, so the API's 15-second answer cache never answers one. The server's RSS is
sampled every 20 ms from just after a light first request (its baseline) to the end of the grid.
`GRID_DECLARE=user_id` declares user_id as a dimension first (as a team that charts by user
would), so the user_id groupings read rollups (the back-fill's time is a figure of its own);
it stays declared in that database. By default the grid measures an org that declared nothing.

Prints one JSON list of result entries on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import psutil
from sqlalchemy import create_engine, text

from bench.case import END, LATE, PG_ADMIN, analyse, build_database, demo_org_and_size
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.ingest.apikeys import create_key
from observatory_core.rollups.dimensions import backfill_step, declare, list_dimensions
from observatory_core.rollups.upgrade import upgrade
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import current_revision

ROOT = Path(__file__).resolve().parent.parent
SORTS = ("start_time", "duration_ms", "total_cost_usd", "total_tokens")  # what /traces accepts
GROUPS = ("model", "environment", "operation", "status", "user_id")
# 1min and 5min chart at most 1 and 5 days: they get the last 24 h, the others 30 days.
BUCKETS = {
    "1min": "1d",
    "5min": "1d",
    "1hour": "30d",
    "1day": "30d",
    "auto": "30d",
    "totals": "30d",
}
SERIES = ("duration_ms.p95", "request_count.count", "total_cost.sum")
WINDOWS = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}


@dataclass(frozen=True)
class Shape:
    name: str
    path: str
    params: tuple[tuple[str, str], ...]
    window: str  # a WINDOWS key
    end: datetime  # the first call's end; each later call ends a second later

    def url(self, call: int) -> str:
        end = self.end + timedelta(seconds=call)
        start = end - WINDOWS[self.window]
        query = [*self.params, ("start", start.isoformat()), ("end", end.isoformat())]
        return f"{self.path}?{urlencode(query)}"


def shapes() -> list[Shape]:
    out = []
    for mode in ("spans", "traces"):
        for sort in SORTS:
            for limit in (50, 500):
                params = (("mode", mode), ("sort", sort), ("limit", str(limit)))
                name = f"grid_explorer_{mode}_{sort}_{limit}"
                out.append(Shape(name, "/api/v1/traces", params, "7d", END))
    for n in range(len(GROUPS) + 1):
        for bucket, window in BUCKETS.items():
            params = [("series", s) for s in SERIES]
            params.append(("bucket", "none" if bucket == "totals" else bucket))
            params += [("group_by", g) for g in GROUPS[:n]]
            # "now" 17 minutes past the hour, as for a real user: ragged edges
            out.append(
                Shape(f"grid_metrics_g{n}_{bucket}", "/api/v1/metrics", tuple(params), window, LATE)
            )
    return out


def database_url(db: str, size: int, folder: str) -> str:
    if db == "sqlite":
        return f"sqlite:///{(ROOT / folder / f'bench_{size}.db').resolve()}"
    return PG_ADMIN.rsplit("/", 1)[0] + f"/obs_bench_{size}"


def spans_in(url: str, db: str, size: int, folder: str) -> int | None:
    """How many spans the bench database of this size holds; None when there is none."""
    if db == "sqlite":
        if not (ROOT / folder / f"bench_{size}.db").exists():
            return None
    else:
        admin = create_engine(PG_ADMIN)
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": f"obs_bench_{size}"}
            ).scalar()
        admin.dispose()
        if not found:
            return None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM spans").scalar()
    except Exception:  # no schema yet: as good as none
        return None
    finally:
        engine.dispose()


def ensure_database(db: str, size: int, folder: str) -> str:
    """The bench database case.py builds for `size` spans; built the same way if it is missing or
    holds another number of spans (the ingest case adds some)."""
    url = database_url(db, size, folder)
    held = spans_in(url, db, size, folder)
    if held is None or abs(held - size) > size // 100:
        log(f"{db}: building {size:,} demo spans (found {held})")
        build_database(db, size, folder)[0].dispose()
    # The schema of this checkout, as `make run` migrates before it serves (a database built
    # by an earlier checkout gets the newer migrations and their backfills).
    engine = get_engine(url)
    before = current_revision(engine)
    upgrade(engine)
    if current_revision(engine) != before:
        log(f"{db}: migrated from {before} to {current_revision(engine)}")
        analyse(engine, db)
    engine.dispose()
    return url


def declare_user_id(engine, scope: Scope, db: str, size: int) -> list[dict]:
    """Declare user_id over the data's last 30 days and back-fill it (once per database)."""
    if any(d["key"] == "user_id" for d in list_dimensions(engine, scope)):
        return []
    declare(engine, scope, "user_id", now=LATE)
    started, steps = time.perf_counter(), 0
    while (state := backfill_step(engine, now=LATE)) is not None:
        steps += 1
        if steps % 5 == 0:
            log(f"{db}: user_id back-fill at {state['done_until']:%Y-%m-%d %H:%M}")
    seconds = time.perf_counter() - started
    (done,) = [d for d in list_dimensions(engine, scope) if d["key"] == "user_id"]
    analyse(engine, db)
    log(f"{db}: user_id back-filled, {done['rows_done']:,} spans in {seconds:.0f} s")
    entry = {"operation": "grid_declare_user_id_backfill", "database": db, "size": size}
    return [
        {
            **entry,
            "median_ms": seconds * 1000,
            "p95_ms": None,
            "rows_per_s": done["rows_done"] / seconds,
            "rows": done["rows_done"],
            "runs": steps,
            "peak_rss_mb": None,
        }
    ]


def code_version() -> str:
    """The commit the server ran, and which of its files differed from it (others edit the tree)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.rstrip()

    changed = git("status", "--porcelain", "--", "observatory_core", "server.py", "pages")
    files = [line[3:] for line in changed.splitlines()]
    return git("rev-parse", "--short", "HEAD") + (
        f" plus changes to {', '.join(files)}" if files else ""
    )


def log(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} grid: {message}", file=sys.stderr, flush=True)


def server_process(port: int) -> psutil.Process:
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "streamlit" in " ".join(cmd) and str(port) in cmd:
            return child
    raise SystemExit("the server process was not found")


class RssWatch:
    """The server's RSS every `interval` seconds (20 ms by default): its overall peak and the
    peak since the last `reset`."""

    def __init__(self, process: psutil.Process, interval: float = 0.02) -> None:
        self.process = process
        self.interval = interval
        self.baseline = process.memory_info().rss
        self.peak = self.shape_peak = self.baseline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:  # the server is gone: the grid stops with its log
                return
            self.peak = max(self.peak, rss)
            self.shape_peak = max(self.shape_peak, rss)
            time.sleep(self.interval)

    def reset(self) -> None:
        self.shape_peak = self.process.memory_info().rss

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def call(conn: http.client.HTTPConnection, key: str, url: str) -> tuple[float, int, str, int, bool]:
    """Milliseconds, status, error code and message (or rows) and whether the cache answered."""
    started = time.perf_counter()
    conn.request("GET", url, headers={"authorization": f"Bearer {key}"})
    response = conn.getresponse()
    raw = response.read()
    ms = (time.perf_counter() - started) * 1000
    try:
        body = json.loads(raw)
    except ValueError:  # not the API's JSON (a crash): kept as what it was
        return ms, response.status, f"not JSON: {raw[:300]!r}", 0, False
    if response.status != 200:
        error = body.get("error", {})
        return ms, response.status, f"{error.get('code', '?')}: {error.get('message')}", 0, False
    data = body["data"]
    rows = len(data["rows"]) if isinstance(data, dict) else len(data)
    return ms, 200, "", rows, bool(body["meta"].get("cached"))


def p95(samples: list[float]) -> float:
    """Interpolated between the sorted runs (with 5 runs the nearest-rank p95 is the maximum)."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def run_grid(
    conn, key: str, grid: list[Shape], watch: RssWatch, args, size: int, out: list
) -> None:
    """One warm-up call and `args.runs` timed ones per shape, an entry each appended to `out`."""
    for shape in grid:
        watch.reset()
        call(conn, key, shape.url(0))  # warm-up
        runs = [call(conn, key, shape.url(i + 1)) for i in range(args.runs)]
        ms = sorted(r[0] for r in runs)
        statuses = Counter(f"{r[1]} {r[2].split(':')[0]}".strip() for r in runs)
        errors = sorted({r[2] for r in runs if r[1] != 200})
        entry = {
            "operation": shape.name,
            "database": args.db,
            "size": size,
            "median_ms": statistics.median(ms),
            "p95_ms": p95(ms),
            "max_ms": ms[-1],
            "rows_per_s": None,
            "rows": max(r[3] for r in runs),
            "errors": errors,
            "runs": len(runs),
            "statuses": dict(statuses),
            "cached_answers": sum(r[4] for r in runs),
            "peak_rss_mb": watch.shape_peak / 2**20,
            "url": shape.url(1),
        }
        out.append(entry)
        log(
            f"{shape.name:<44} {dict(statuses)} median {entry['median_ms']:8.1f} "
            f"p95 {entry['p95_ms']:8.1f} max {entry['max_ms']:8.1f} rows {entry['rows']:>6} "
            f"rss {entry['peak_rss_mb']:.0f} MB"
        )


def keep_server_log(tmp: Path, args, why: str) -> None:
    """The server's log, copied out of its temporary folder for a look at what went wrong."""
    for server_log in tmp.glob("server-*.log"):
        kept = ROOT / args.folder / f"grid-server-{args.db}-{args.size}.log"
        kept.write_text(server_log.read_text())
        log(f"{why}: the server's log is in {kept}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--folder", default="bench/data")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", help="run only the shapes whose name contains this")
    args = parser.parse_args()

    from tests.live_server import running_server

    url = ensure_database(args.db, args.size, args.folder)
    engine = get_engine(url)
    org_id, size = demo_org_and_size(engine)
    scope = Scope(org_id, Role.ADMIN, username="bench")
    key = create_key(engine, scope, "bench grid", scopes=("read",), role=Role.ADMIN)
    out = declare_user_id(engine, scope, args.db, size) if os.environ.get("GRID_DECLARE") else []
    engine.dispose()
    grid = [s for s in shapes() if not args.only or args.only in s.name]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(
            url,
            Path(tmp),
            OBSERVATORY_EMBEDDED_WORKER="0",
            OBSERVATORY_API_RATE_MULTIPLIER="1000",
        ) as base,
    ):
        port = int(base.rsplit(":", 1)[1])
        server = server_process(port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        # A light first request of each route (connections, imports), then the baseline.
        light = {s.name: s for s in shapes()}
        for name in ("grid_explorer_spans_start_time_50", "grid_metrics_g0_totals"):
            call(conn, key, light[name].url(-1))
        code = code_version()  # as the server started
        watch = RssWatch(server)
        started_at = datetime.now(UTC)
        log(
            f"{args.db} {size:,} spans: {len(grid)} shapes, baseline {watch.baseline / 2**20:.0f} MB"
        )
        try:
            run_grid(conn, key, grid, watch, args, size, out)
        except (OSError, http.client.HTTPException):
            keep_server_log(Path(tmp), args, "the server stopped answering")
            raise
        watch.stop()
        conn.close()
        if any(set(e.get("statuses", ())) - {"200", "400 bad_request", "503 timeout"} for e in out):
            keep_server_log(Path(tmp), args, "an unexpected answer above")
    finished_at = datetime.now(UTC)
    out.append(
        {
            "operation": "grid_server_peak_rss",
            "database": args.db,
            "size": size,
            "median_ms": None,
            "p95_ms": None,
            "rows_per_s": None,
            "rows": None,
            "runs": len(grid),
            "baseline_rss_mb": watch.baseline / 2**20,
            "peak_rss_mb": watch.peak / 2**20,
            "growth_mb": (watch.peak - watch.baseline) / 2**20,
            "code": code,
            "started_at": started_at.strftime("%Y-%m-%d %H:%M UTC"),
            "finished_at": finished_at.strftime("%Y-%m-%d %H:%M UTC"),
        }
    )
    log(f"{args.db}: peak growth {(watch.peak - watch.baseline) / 2**20:.0f} MB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
