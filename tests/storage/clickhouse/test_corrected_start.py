"""A span resent with another start time (a corrected start) is a span already stored: the first
copy stays, in the list, the totals, the rollups and the trace totals, on chDB (the ingest
writer) as on SQLite and PostgreSQL (their unique key), checked against polars on the sent
spans. Start time is in the span table's key, so a second copy would sort apart from the
first and never fold (docs/span-store-internals.md, "A corrected start")."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import func, select

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest import to_clickhouse
from observatory_core.ingest.persist import write_spans as write_to_database
from observatory_core.storage.clickhouse.reads import Window, list_spans, span_totals
from observatory_core.storage.schema import ROLLUPS, spans, trace_totals
from observatory_core.traces.query import list_spans as explorer_list
from tests.helpers import END, empty_database, make_org, span

WINDOW = Window(END - timedelta(days=90), END + timedelta(days=1))


def _sent(org_id: int, project_id: int) -> list[list[dict]]:
    """Three writes: 60 spans; a third of them again, started 7 s later or 40 days earlier
    (another month's partition); 10 new spans, each followed by its corrected copy in the
    same batch."""
    first: list[dict] = []
    for i in range(60):
        root = first[i - i % 3] if i % 3 else None  # three spans a trace, one root
        first.append(
            span(
                org_id,
                project_id,
                END - timedelta(hours=3, seconds=61 * i),
                input_tokens=10 + i,
                output_tokens=i,
                total_cost_usd=0.001 * i,
                status="error" if i % 5 == 0 else "ok",
                trace_id=root["trace_id"] if root else f"{org_id:08x}{i // 3:024x}",
                parent_span_id=root["span_id"] if root else None,
            )
        )
    moved = [
        _shifted(r, timedelta(seconds=7) if i % 2 else -timedelta(days=40))
        for i, r in enumerate(first[::3])
    ]
    new = [
        span(org_id, project_id, END - timedelta(hours=1, seconds=13 * i), input_tokens=3)
        for i in range(10)
    ]
    mixed = [r for n in new for r in (n, _shifted(n, timedelta(seconds=2)))]
    return [first, moved, mixed]


def _shifted(row: dict, by: timedelta) -> dict:
    return dict(row, start_time=row["start_time"] + by, end_time=row["end_time"] + by)


def _first_copies(writes: list[list[dict]]) -> pl.DataFrame:
    frame = pl.DataFrame([r for rows in writes for r in rows], infer_schema_length=None)
    return frame.unique(["org_id", "trace_id", "span_id"], keep="first", maintain_order=True)


def _expected(want: pl.DataFrame) -> dict:
    """What every store must hold: each span once, at its first start."""
    hours = (
        want.with_columns(pl.col("start_time").dt.truncate("1h").alias("bucket"))
        .group_by("bucket")
        .agg(pl.len().alias("spans"), pl.col("total_tokens").sum().alias("tokens"))
    )
    traces = want.group_by("trace_id").agg(
        pl.len().alias("spans"), pl.col("start_time").min().alias("first")
    )
    return {
        "spans": {
            (r["trace_id"], r["span_id"]): r["start_time"] for r in want.iter_rows(named=True)
        },
        "hours": {r["bucket"]: (r["spans"], r["tokens"]) for r in hours.iter_rows(named=True)},
        "traces": {r["trace_id"]: (r["spans"], r["first"]) for r in traces.iter_rows(named=True)},
    }


def _utc(value):
    return value if value.tzinfo else value.replace(tzinfo=END.tzinfo)


@pytest.fixture
def database(db_url):
    to_clickhouse.forget_settings()
    engine = empty_database(db_url)
    org_id, (project_id,) = make_org(engine, "corrected")
    return engine, org_id, project_id


def test_a_corrected_start_is_the_span_already_stored_on_every_store(database, chdb_session):
    engine, org_id, project_id = database
    writes = _sent(org_id, project_id)
    want = _first_copies(writes)
    expected = _expected(want)
    assert len(expected["spans"]) == 70

    # DATABASE_URL's own span tables (no span store set)
    assert [write_to_database(engine, rows) for rows in writes] == [60, 0, 10]
    roll = ROLLUPS["1hour"].c
    with engine.connect() as conn:
        stored = conn.execute(
            select(spans.c.trace_id, spans.c.span_id, spans.c.start_time).where(
                spans.c.org_id == org_id
            )
        ).all()
        hours = conn.execute(
            select(roll.bucket_start, func.sum(roll.span_count), func.sum(roll.total_tokens_sum))
            .where(roll.org_id == org_id)
            .group_by(roll.bucket_start)
        ).all()
        t = trace_totals.c
        traces = conn.execute(
            select(t.trace_id, t.span_count, t.first_start).where(t.org_id == org_id)
        ).all()
    database_holds = _holding(stored, hours, traces)
    assert database_holds == expected
    _explorer_lists(engine, org_id, expected)

    # the span store, through the ingest writer
    store = chdb_session.store("corrected")
    try:
        assert [to_clickhouse.write_spans(store, engine, rows) for rows in writes] == [60, 0, 10]
        q = store.client.query
        stored = q(
            f"SELECT trace_id, span_id, start_time FROM {store.table('spans')} "
            f"WHERE org_id = {org_id}"
        ).result_rows
        hours = q(
            "SELECT bucket_start, sum(span_count), sum(total_tokens_sum) "
            f"FROM {store.table('rollup_1hour')} WHERE org_id = {org_id} GROUP BY bucket_start"
        ).result_rows
        traces = q(
            "SELECT trace_id, sum(span_count), min(first_start) "
            f"FROM {store.table('trace_totals')} WHERE org_id = {org_id} GROUP BY trace_id"
        ).result_rows
        assert _holding(stored, hours, traces) == expected

        scope = Scope(org_id=org_id, role=Role.ADMIN, project_ids=None)
        listed, after = [], None
        while True:
            page = list_spans(store, scope, WINDOW, after=after, limit=25)
            listed += page.rows
            if (after := page.next) is None:
                break
        assert {(r["trace_id"], r["span_id"]): _utc(r["start_time"]) for r in listed} == (
            expected["spans"]
        )
        assert len(listed) == want.height
        totals = span_totals(store, scope, WINDOW)
        assert (totals.spans, totals.tokens) == (want.height, want["total_tokens"].sum())
        assert totals.cost_usd == pytest.approx(want["total_cost_usd"].sum())
        _explorer_lists(store.engine, org_id, expected)
    finally:
        chdb_session.drop(store)


def _holding(stored, hours, traces) -> dict:
    return {
        "spans": {(t, s): _utc(start) for t, s, start in stored},
        "hours": {_utc(b): (int(n), int(tokens)) for b, n, tokens in hours},
        "traces": {t: (int(n), _utc(first)) for t, n, first in traces},
    }


def _explorer_lists(engine, org_id: int, expected: dict) -> None:
    """The Traces page's lists (spans and traces mode), walked page by page: each span once,
    at its first start, and each trace's span count."""
    scope = Scope(org_id=org_id, role=Role.ADMIN, project_ids=None)
    spec = FilterSpec(relative=None, start=WINDOW.start, end=WINDOW.end)
    for mode in ("spans", "traces"):
        rows, cursor = [], None
        for _ in range(100):
            page = explorer_list(engine, scope, spec, mode=mode, cursor=cursor, limit=25, now=END)
            rows += page.rows
            if not (cursor := page.next_cursor):
                break
        if mode == "spans":
            listed = {(r["trace_id"], r["span_id"]): _utc(r["start_time"]) for r in rows}
            assert listed == expected["spans"] and len(rows) == len(listed)
        else:
            counts = {r["trace_id"]: r["span_count"] for r in rows}
            assert counts == {t: n for t, (n, _) in expected["traces"].items()}
            assert len(rows) == len(counts)
