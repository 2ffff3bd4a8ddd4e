"""`GET /api/v1/traces` first pages through the real server on PostgreSQL, 8 clients at once.

Each client (a process with a keep-alive connection and its own key) cycles through the
explorer's typical first pages over the demo data's last day and week, for a fixed time.
Latency is measured end to end at the client. The rate limit is raised for the run
(OBSERVATORY_API_RATE_MULTIPLIER) so that it measures the API, not the limiter.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

from bench.case import END, demo_org_and_size
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.ingest.apikeys import create_key
from observatory_core.storage.engine import get_engine

DAY = {"start": (END - timedelta(days=1)).isoformat(), "end": END.isoformat()}
WEEK = {"start": (END - timedelta(days=7)).isoformat(), "end": END.isoformat()}
QUERIES = [
    urlencode(DAY),
    urlencode({**WEEK, "models": "gpt-4o"}),
    urlencode({**WEEK, "statuses": "error", "sort": "total_cost_usd"}),
    urlencode({**DAY, "mode": "traces"}),
]


def _client(port: int, key: str, stop_at: float, out: list, offset: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"authorization": f"Bearer {key}"}
    i = offset
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        conn.request("GET", f"/api/v1/traces?{QUERIES[i % len(QUERIES)]}&limit=50", headers=headers)
        response = conn.getresponse()
        response.read()
        out.append((response.status, time.perf_counter() - started))
        i += 1
    conn.close()


def _timed_client(port: int, key: str, seconds: float, offset: int) -> list:
    out: list = []
    _client(port, key, time.perf_counter() + seconds, out, offset)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, help="unused: the spans already there are counted")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    from tests.live_server import running_server

    engine = get_engine(args.url)
    org_id, size = demo_org_and_size(engine)
    scope = Scope(org_id, Role.ADMIN, username="bench")
    keys = [
        create_key(engine, scope, f"bench api {i}", scopes=("read",)) for i in range(args.clients)
    ]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(
            args.url,
            Path(tmp),
            OBSERVATORY_EMBEDDED_WORKER="0",
            OBSERVATORY_API_RATE_MULTIPLIER="1000",
        ) as base,
    ):
        port = int(base.rsplit(":", 1)[1])
        warm: list = []
        _client(port, keys[0], time.perf_counter() + 3, warm, 0)
        # Each client is its own process, as 8 separate programs would be: threads of one
        # Python process would queue on its lock and add that wait to the latencies.
        with multiprocessing.get_context("fork").Pool(len(keys)) as pool:
            results = pool.starmap(
                _timed_client, [(port, key, args.seconds, i) for i, key in enumerate(keys)]
            )
    done = [r for rs in results for r in rs]
    ok = sorted(latency * 1000 for status, latency in done if status == 200)
    bad = len(done) - len(ok)
    if bad:
        raise SystemExit(f"{bad} requests failed")
    print(
        json.dumps(
            [
                {
                    "operation": "api_traces_first_page_8_clients",
                    "database": "postgresql",
                    "size": size,
                    "median_ms": statistics.median(ok),
                    "p95_ms": ok[int(0.95 * (len(ok) - 1))],
                    "p99_ms": ok[int(0.99 * (len(ok) - 1))],
                    "rows_per_s": len(ok) / args.seconds,
                    "requests": len(ok),
                    "peak_rss_mb": None,
                }
            ]
        )
    )


if __name__ == "__main__":
    main()
