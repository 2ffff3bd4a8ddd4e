"""The query builders on the span store (`SpanStore.engine`, storage/stores/clickhouse.py):
copies left by racing writers and twins listed once, counts and pages against polars, the time
budget kept while the engine is busy, and traces mode refused in one sentence."""

from __future__ import annotations

import threading
import time

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import QueryTooSlow, UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage import budget
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.writes import as_columns, write_spans
from observatory_core.traces.detail import get_trace
from observatory_core.traces.query import list_spans
from tests.storage.clickhouse.conftest import END, demo_rows

ROWS = demo_rows(240, seed=41, days=3)
FRAME = pl.DataFrame(ROWS, infer_schema_length=None)
ORG = FRAME["org_id"].mode()[0]
MINE = [r for r in ROWS if r["org_id"] == ORG]
COPIED = MINE[:30]  # written twice more by "racing writers", each with a later version
SPEC = FilterSpec(relative=None)


@pytest.fixture(scope="module")
def store(chdb_store):
    assert write_spans(chdb_store, ROWS) == len(ROWS)
    names = layout.span_column_names()
    for version in (2**62, 2**62 + 1):
        chdb_store.client.insert(
            chdb_store.table("spans"),
            as_columns(COPIED, names, version, lambda org, project: 0),
            column_names=list(names),
            column_oriented=True,
        )
    return chdb_store


def _walk(store, limit: int, sort: str) -> list[dict]:
    rows, cursor = [], None
    scope = Scope(org_id=ORG, role=Role.ADMIN)
    while True:
        page = list_spans(store.engine, scope, SPEC, limit=limit, sort=sort, cursor=cursor, now=END)
        rows += page.rows
        if not page.next_cursor:
            return rows
        cursor = page.next_cursor


@pytest.mark.parametrize(("limit", "sort"), [(12, "start_time"), (50, "duration_ms")])
def test_copies_are_listed_once_page_after_page(store, limit, sort):
    rows = _walk(store, limit, sort)
    keys = [(r["trace_id"], r["span_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(MINE)
    assert set(keys) == {(r["trace_id"], r["span_id"]) for r in MINE}
    values = [(r[sort], r["id"]) for r in rows]
    assert values == sorted(values, reverse=True)


def test_the_count_and_a_trace_count_each_span_once(store):
    scope = Scope(org_id=ORG, role=Role.ADMIN)
    page = list_spans(store.engine, scope, SPEC, count=True, limit=5, now=END)
    assert page.total == len(MINE)
    trace_id = COPIED[0]["trace_id"]
    detail = get_trace(store.engine, scope, trace_id)
    want = FRAME.filter((pl.col("org_id") == ORG) & (pl.col("trace_id") == trace_id))
    assert detail.span_count == len(detail.spans) == want.height
    assert detail.total_tokens == want["total_tokens"].sum()


def test_traces_mode_is_refused_in_one_sentence(store):
    scope = Scope(org_id=ORG, role=Role.ADMIN)
    with pytest.raises(UserError, match="^Whole traces cannot be listed from the ClickHouse"):
        list_spans(store.engine, scope, SPEC, mode="traces", now=END)


def test_a_list_waiting_on_the_busy_engine_stays_within_its_budget(store):
    busy = threading.Thread(
        target=store.client.query,  # a statement without a budget holds the engine
        args=("SELECT sum(sleepEachRow(0.25)) FROM numbers(8) SETTINGS max_block_size = 1",),
    )
    busy.start()
    time.sleep(0.3)
    started = time.monotonic()
    try:
        with budget.time_budget(1), pytest.raises(QueryTooSlow):
            list_spans(store.engine, Scope(org_id=ORG, role=Role.ADMIN), SPEC, now=END)
    finally:
        waited = time.monotonic() - started
        busy.join()
    assert waited < 2.5, waited
