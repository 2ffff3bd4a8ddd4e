"""The span store's rollups keep the latency bins every store keeps (storage/latency_bins.py):
a latency falls in the same bin in Python (SQLite's `obs_latency_bin`), in PostgreSQL's SQL
and in the span store's views, on the edges where a formula would slip: 0, the floor, just
above it, each bin's upper edge and just above it, one hour and above."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, literal_column, text

from observatory_core.storage import latency_bins
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.dialect import latency_bin
from observatory_core.storage.stores.sqlite import sqlite_latency_bin
from tests.storage.clickhouse.conftest import demo_rows

FLOOR, TOP = latency_bins.ABSOLUTE_FLOOR_MS, latency_bins.LAST_EDGE_MS
EDGES = [latency_bins.upper_edge(i) for i in range(1, latency_bins.BINS - 1)]
VALUES = [
    0.0,
    0.05,
    FLOOR,
    FLOOR * (1 + 1e-9),
    0.1000001,
    1.0,
    1000.0,
    TOP,
    TOP * (1 + 1e-12),
    TOP + 0.001,
    3_600_001.0,
    1e9,
    *EDGES,
    *(e * (1 + 1e-9) for e in EDGES),
    *(e * (1 - 1e-9) for e in EDGES),
]


def _pg_bins(conn, values: list[float | None]) -> list[int | None]:
    """Each value's bin as PostgreSQL computes it (`latency_bin` compiled for it)."""
    from sqlalchemy.dialects import postgresql

    import observatory_core.storage.stores.postgres  # noqa: F401  (registers the constructs)

    expression = latency_bin(literal_column("v")).compile(dialect=postgresql.dialect())
    rows = conn.execute(
        text(
            f"SELECT {expression} FROM unnest(CAST(:values AS float8[])) WITH ORDINALITY AS t(v, i) ORDER BY i"
        ),
        {"values": values},
    )
    return [r[0] for r in rows]


def _span_store_bins(store, values: list[float | None]) -> list[int | None]:
    """Each value's bin as the span store's views compute it (the same compiled construct)."""
    from observatory_core.storage.clickhouse.layout import sql

    expression = sql(latency_bin(literal_column("v")))
    rows = store.client.query(
        f"SELECT {expression} FROM (SELECT arrayJoin(arrayEnumerate(%(values)s)) AS i, "
        "CAST(%(values)s[i], 'Nullable(Float64)') AS v) ORDER BY i",
        parameters={"values": values},
    ).result_rows
    return [r[0] for r in rows]


def test_the_bin_of_an_edge_value_is_the_same_on_every_store(chdb_store, pg_url):
    want = [latency_bins.bin_of(v) for v in VALUES]
    assert want[:12] == [0, 0, 0, 1, 1, *want[5:7], 870, 871, 871, 871, 871]
    assert [sqlite_latency_bin(v) for v in VALUES] == want
    assert _span_store_bins(chdb_store, [*VALUES, None]) == [*want, None]
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert _pg_bins(conn, [*VALUES, None]) == [*want, None]
    finally:
        engine.dispose()


def test_the_views_put_each_span_in_the_bin_python_gives_it(chdb_store):
    """Spans of edge latencies written as ingestion writes them: each rollup grain's bins
    (the minute's from the spans, the hour's and day's from the finer rows) count each span in
    `bin_of`'s bin."""
    template = demo_rows(1)[0]
    start = datetime(2026, 11, 20, 9, 0, 30, tzinfo=UTC)
    values = VALUES[:12] + EDGES[::29] + [e * (1 + 1e-9) for e in EDGES[::31]]
    rows = []
    for i, value in enumerate(values):
        at = start + timedelta(seconds=i % 50)
        rows.append(
            {
                **template,
                "trace_id": uuid.uuid4().hex,
                "span_id": uuid.uuid4().hex[:16],
                "start_time": at,
                "end_time": at + timedelta(milliseconds=value),
                "duration_ms": value,
            }
        )
    assert write_spans(chdb_store, rows) == len(rows)
    want = Counter(latency_bins.bin_of(v) for v in values)
    for grain in ("1min", "1hour", "1day"):
        got = chdb_store.client.query(
            f"SELECT sumMap(latency_bins) FROM {chdb_store.table('rollup_' + grain)}"
        ).result_rows[0][0]
        assert {int(k): int(v) for k, v in got.items()} == dict(want), grain
