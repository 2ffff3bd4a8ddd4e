"""Sustained OTLP ingest into the real server on PostgreSQL, next to a plain COPY of the rows.

Four clients (threads with keep-alive connections) post pre-encoded protobuf batches of 512
spans, the OpenTelemetry SDK's default batch size, to `POST /v1/traces` for a fixed time. Every
span is new. The figure is committed spans per second (a 200 means committed) and the request
latency percentiles. The baseline then COPYs the same stored rows into a copy of the spans table
with the same indexes, without rollups: what the database alone can take.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.tenancy import ensure_org, ensure_project
from observatory_core.ingest.apikeys import create_key
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade

BATCH = 512
MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o"))
WORDS = [
    "invoice",
    "refund",
    "order",
    "shipping",
    "account",
    "password",
    "billing",
    "plan",
    "upgrade",
    "cancel",
]


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build_bodies(count: int, seed: int) -> list[bytes]:
    """`count` requests of 512 new spans: agent traces of 1 root, 1 embedding, 2 chats."""
    rng = random.Random(seed)
    now = time.time_ns()
    bodies = []
    next_id = seed * 10**9
    for _ in range(count):
        request = ExportTraceServiceRequest()
        resource = request.resource_spans.add()
        resource.resource.attributes.extend(
            [_kv("service.name", "bench-app"), _kv("deployment.environment.name", "production")]
        )
        out = resource.scope_spans.add()
        out.scope.name = "bench"
        for _ in range(BATCH // 4):
            next_id += 1
            trace_id = next_id.to_bytes(16, "big")
            root_id = (next_id * 4).to_bytes(8, "big")
            start = now - rng.randint(0, 60_000_000_000)
            for k in range(4):
                span = out.spans.add()
                span.trace_id = trace_id
                span.span_id = (next_id * 4 + k).to_bytes(8, "big")
                span.start_time_unix_nano = start + k * 1_000_000
                span.end_time_unix_nano = start + k * 1_000_000 + rng.randint(50, 4000) * 1_000_000
                if k == 0:
                    span.name = "invoke_agent bench"
                    span.attributes.append(_kv("gen_ai.operation.name", "invoke_agent"))
                    continue
                span.parent_span_id = root_id
                if k == 1:
                    span.name = "embeddings text-embedding-3-small"
                    span.attributes.extend(
                        [
                            _kv("gen_ai.operation.name", "embeddings"),
                            _kv("gen_ai.provider.name", "openai"),
                            _kv("gen_ai.request.model", "text-embedding-3-small"),
                            _kv("gen_ai.usage.input_tokens", rng.randint(10, 80)),
                        ]
                    )
                    continue
                provider, model = rng.choice(MODELS)
                span.name = f"chat {model}"
                question, answer = _text(rng, 25), _text(rng, 60)
                span.attributes.extend(
                    [
                        _kv("gen_ai.operation.name", "chat"),
                        _kv("gen_ai.provider.name", provider),
                        _kv("gen_ai.request.model", model),
                        _kv("gen_ai.usage.input_tokens", rng.randint(200, 3000)),
                        _kv("gen_ai.usage.output_tokens", rng.randint(20, 800)),
                        _kv(
                            "gen_ai.input.messages",
                            json.dumps(
                                [{"role": "user", "parts": [{"type": "text", "content": question}]}]
                            ),
                        ),
                        _kv(
                            "gen_ai.output.messages",
                            json.dumps(
                                [
                                    {
                                        "role": "assistant",
                                        "parts": [{"type": "text", "content": answer}],
                                    }
                                ]
                            ),
                        ),
                        _kv("user.id", f"user_{rng.randint(1, 500)}"),
                        _kv("session.id", f"sess_{rng.randint(1, 3000)}"),
                    ]
                )
                if rng.random() < 0.02:
                    span.status.code = 2
                    span.status.message = "Error code: 429 - rate limit"
        bodies.append(request.SerializeToString())
    return bodies


def run_clients(
    port: int, key: str, bodies: list[list[bytes]], seconds: float, *, warm_seconds: float
) -> tuple[list[list], float]:
    """One warm-up request, then one client thread per list of bodies posting until `seconds`
    have passed: each client's (status, latency) results, and the seconds it took."""
    _client(port, key, build_bodies(2, seed=999_999), time.perf_counter() + warm_seconds, [])
    results: list[list] = [[] for _ in bodies]
    started = time.perf_counter()
    stop_at = started + seconds
    threads = [
        threading.Thread(target=_client, args=(port, key, mine, stop_at, out))
        for mine, out in zip(bodies, results, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


def _client(port: int, key: str, bodies: list[bytes], stop_at: float, out: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {key}"}
    for body in bodies:
        if time.perf_counter() >= stop_at:
            break
        started = time.perf_counter()
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        out.append((response.status, time.perf_counter() - started))
        if response.status != 200:
            time.sleep(float(response.getheader("retry-after") or 0.1))
    conn.close()


def _copy_baseline(url: str, org_id: int) -> float:
    """Rows/s of a plain COPY of the ingested rows into an indexed copy of the spans table."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'spans' "
                "AND column_name <> 'id' ORDER BY ordinal_position"
            )
        ]
        names = ", ".join(f'"{c}"' for c in cols)
        data = io.BytesIO()
        with conn.cursor().copy(
            f"COPY (SELECT {names} FROM spans WHERE org_id = {org_id}) TO STDOUT"
        ) as copy:
            for block in copy:
                data.write(block)
        rows = conn.execute(f"SELECT count(*) FROM spans WHERE org_id = {org_id}").fetchone()[0]
        conn.execute("DROP TABLE IF EXISTS spans_copy_bench")
        conn.execute(
            "CREATE TABLE spans_copy_bench (LIKE spans INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        payload = data.getvalue()
        started = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor().copy(f"COPY spans_copy_bench ({names}) FROM STDIN") as copy,
        ):
            for i in range(0, len(payload), 1 << 20):
                copy.write(payload[i : i + (1 << 20)])
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE spans_copy_bench")
    return rows / seconds


def _ensure_database(url: str) -> None:
    """`BENCH_ONLY=ingest` on a machine without the main case's database: start from empty."""
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).first():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, help="unused: the spans already there are counted")
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    from bench.grid_case import RssWatch, server_process
    from tests.live_server import running_server

    _ensure_database(args.url)
    engine = get_engine(args.url)
    upgrade(engine)
    with engine.begin() as conn:  # an org per run: the baseline copies exactly this run's rows
        org_id = ensure_org(conn, f"bench-ingest-{int(time.time())}", "Bench ingest")
        ensure_project(conn, org_id, "default", "Default")
    key = create_key(engine, Scope(org_id, Role.ADMIN, username="bench"), "bench")
    with engine.connect() as conn:  # the size reported is what is really there
        already = conn.exec_driver_sql("SELECT count(*) FROM spans").scalar()
    per_client = int(args.seconds * 30_000 / BATCH / args.clients) + 1  # more than can be sent
    bodies = [
        build_bodies(per_client, seed=1 + c + int(time.time()) % 100_000 * 10)
        for c in range(args.clients)
    ]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(args.url, Path(tmp), OBSERVATORY_EMBEDDED_WORKER="0") as base,
    ):
        port = int(base.rsplit(":", 1)[1])
        # the server's, every 200 ms: a finer poll takes CPU from the clients on 2 cores
        rss = RssWatch(server_process(port), interval=0.2)
        results, elapsed = run_clients(port, key, bodies, args.seconds, warm_seconds=30)
        rss.stop()
    done = [r for rs in results for r in rs]
    ok = [latency for status, latency in done if status == 200]
    refused = len(done) - len(ok)
    latencies = sorted(ok)
    rate = len(ok) * BATCH / elapsed
    copy_rate = _copy_baseline(args.url, org_id)
    entry = {
        "database": "postgresql",
        "size": already,
        "peak_rss_mb": None,
    }
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    print(
        json.dumps(
            [
                {
                    **entry,
                    "operation": "ingest_otlp_4_clients",
                    "median_ms": statistics.median(latencies) * 1000,
                    "p95_ms": p(0.95),
                    "p99_ms": p(0.99),
                    "rows_per_s": rate,
                    "requests": len(ok),
                    "refused": refused,
                    "peak_rss_mb": rss.peak / 2**20,
                },
                {
                    **entry,
                    "operation": "ingest_copy_baseline",
                    "median_ms": None,
                    "p95_ms": None,
                    "rows_per_s": copy_rate,
                },
            ]
        )
    )


if __name__ == "__main__":
    main()
