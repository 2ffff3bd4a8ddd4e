"""The query builders on the span store (`SpanStore.engine`, storage/stores/clickhouse.py):
copies left by racing writers and twins listed once, counts and pages against polars, the time
budget kept while the engine is busy, and traces mode's trees counted once."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import QueryTooSlow
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage import budget
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.fold_copies import fold_copies
from observatory_core.storage.clickhouse.writes import as_columns, write_spans
from observatory_core.traces.detail import get_trace
from observatory_core.traces.query import list_spans
from tests.chdb_store import write_later_copy
from tests.helpers import span
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
    now = time.time_ns() // 1000  # the write clock: both copies under a page's pin
    for version in (now + 1, now + 2):
        chdb_store.client.insert(
            chdb_store.table("spans"),
            as_columns(COPIED, names, version, lambda org, project: 0),
            column_names=list(names),
            column_oriented=True,
        )
    fold_copies(chdb_store)  # as schema version 7 and `clickhouse-fold-copies` leave them
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


@pytest.mark.parametrize("sort", ["start_time", "total_tokens"])
def test_traces_mode_lists_each_trace_once_its_copied_spans_counted_once(store, sort):
    """Traces mode by the root's start (totals from the spans) and by a tree total (from the
    trace totals): each trace once; each span once in its counts, but for a tree total of a
    trace with a racing writer's copies, which the trace totals counted as they came (a
    known gap, docs/scale.md "Known gaps": the fold deletes the copies, not their counts)."""
    scope = Scope(org_id=ORG, role=Role.ADMIN)
    rows, cursor = [], None
    while True:
        page = list_spans(
            store.engine, scope, SPEC, mode="traces", sort=sort, limit=7, cursor=cursor, now=END
        )
        rows += page.rows
        if not (cursor := page.next_cursor):
            break
    mine = FRAME.filter(pl.col("org_id") == ORG)
    rooted = mine.filter(pl.col("parent_span_id").is_null())["trace_id"].unique()
    assert sorted(r["trace_id"] for r in rows) == sorted(rooted)
    per_trace = mine.group_by("trace_id").agg(pl.len(), pl.col("total_tokens").sum())
    want = {t: (n, k) for t, n, k in per_trace.iter_rows()}
    copied = {r["trace_id"] for r in COPIED} if sort == "total_tokens" else set()
    assert {
        r["trace_id"]: (r["span_count"], r["total_tokens"])
        for r in rows
        if r["trace_id"] not in copied
    } == {t: want[t] for t in rooted if t not in copied}
    copied = {r["trace_id"] for r in COPIED}
    assert copied & {r["trace_id"] for r in rows}


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


def test_a_later_copy_alone_decides_filters_sorts_and_counts(store):
    """A racing writer's later copy changed the status and duration: the span is judged as its
    newest copy says, under every filter and sort, never as the older copy says."""
    when = END - timedelta(hours=2)
    other = 9_999  # an org of this test's own
    first = span(other, 1, when, status="error", duration_ms=100.0)
    assert write_spans(store, [first, span(other, 1, when, duration_ms=300.0)]) == 2
    table = store.table("spans")
    store.client.command(
        f"INSERT INTO {table} SELECT * REPLACE (version + 1 AS version, 'ok' AS status, "
        f"500.0 AS duration_ms) FROM {table} WHERE org_id = {other} "
        f"AND span_id = '{first['span_id']}'"
    )
    fold_copies(store)  # as schema version 7 and `clickhouse-fold-copies` leave them
    scope = Scope(org_id=other, role=Role.ADMIN)
    window = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END)

    def listed(spec, **kw):
        page = list_spans(store.engine, scope, spec, count=True, now=END, **kw)
        return [(r["status"], r["duration_ms"]) for r in page.rows], page.total

    assert listed(window.replace(statuses=("error",))) == ([], 0)
    assert listed(window.replace(statuses=("ok",)), sort="duration_ms") == (
        [("ok", 500.0), ("ok", 300.0)],
        2,
    )
    slow = window.replace(min_duration_ms=400.0)
    assert listed(slow) == ([("ok", 500.0)], 1)
    fast = window.replace(max_duration_ms=200.0)
    assert listed(fast) == ([], 0)


def test_times_are_bound_in_utc_whatever_the_drivers_zone():
    """The driver writes a bound time in its `server_tz` (the process's zone on chDB); the
    column reads it as UTC, so a bound must be written in UTC itself."""
    from zoneinfo import ZoneInfo

    from observatory_core.storage.clickhouse.sql import _bound

    at = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)
    berlin = at.astimezone(ZoneInfo("Europe/Berlin"))
    for value in (at, berlin):
        assert _bound(value).format(ZoneInfo("Europe/Berlin"), True) == "2026-11-20 12:00:00.123456"


def test_a_first_page_reads_no_other_orgs_spans(store):
    """Every statement of a first page, its count and its days names the caller's org (the
    page's pin is the write clock, not a read of the whole table)."""
    from sqlalchemy import event

    from observatory_core.base.zones import Zone
    from observatory_core.traces.days import list_days

    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        scope = Scope(org_id=ORG, role=Role.ADMIN)
        list_spans(store.engine, scope, SPEC, count=True, limit=5, now=END)
        list_days(store.engine, scope, SPEC, zone=Zone("UTC"), now=END)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    reads = [s for s in seen if ".spans" in s]
    assert reads, seen
    for statement in reads:
        assert re.search(r"org_id`? = ", statement), statement


@pytest.fixture
def merges_stopped():
    stopped = []

    def stop(store, table: str) -> None:
        store.client.command(f"SYSTEM STOP MERGES {store.table(table)}")
        stopped.append((store, table))

    yield stop
    for store, table in stopped:
        store.client.command(f"SYSTEM START MERGES {store.table(table)}")


def test_a_later_copy_alone_decides_the_text_search(store, merges_stopped):
    """Once the copies are folded, a span is found by its newest copy's text alone, never by
    an older copy's, and counted once."""
    when = END - timedelta(hours=3)
    other = 9_997  # an org of this test's own
    merges_stopped(store, "spans")  # the older copies kept (a merge keeps the newest alone)
    was = span(other, 1, when, input_text="Please refund my order", output_text="Sure")
    now = span(other, 1, when + timedelta(minutes=1), input_text="Hello", output_text="Hi")
    assert write_spans(store, [was, now]) == 2
    table = store.table("spans")
    for row, text in ((was, "Hello again"), (now, "A REFUND, at last")):
        store.client.command(
            f"INSERT INTO {table} SELECT * REPLACE (version + 1 AS version, '{text}' AS "
            f"input_text) FROM {table} WHERE org_id = {other} AND span_id = '{row['span_id']}'"
        )
    scope = Scope(org_id=other, role=Role.ADMIN)

    def found(needle: str, relative: str | None) -> tuple[list[str], int]:
        spec = FilterSpec(relative=relative, search=needle)
        page = list_spans(store.engine, scope, spec, count=True, now=END)
        return [r["span_id"] for r in page.rows], page.total

    copies = f"SELECT count() FROM {table} WHERE org_id = {other}"
    assert store.client.query(copies).result_rows[0][0] == 4
    store.client.command(f"SYSTEM START MERGES {table}")  # a delete is a mutation
    fold_copies(store)  # (a merge may fold these first: the same start, the newest kept)
    assert store.client.query(copies).result_rows[0][0] == 2
    for relative in (None, "24h"):
        assert found("refund", relative) == ([now["span_id"]], 1)
        assert found("hello", relative) == ([was["span_id"]], 1)
        assert found("please", relative) == ([], 0)


def test_a_trace_written_in_two_parts_is_counted_by_its_first_start(store, merges_stopped):
    """The trace totals' derived table narrows its traces by the bounds on their summed times
    (storage/clickhouse/trace_totals.py, `traces_within`): a trace whose spans arrived in two
    writes, one in the window and one after it, is still counted in the window its first span
    starts in, and in no other."""
    from observatory_core.base.settings import get_settings
    from observatory_core.metrics.engine import run_metrics
    from observatory_core.metrics.query import MetricQuery

    other = 9_996
    merges_stopped(store, "trace_totals")  # the partial rows kept, not summed by a merge
    start, end = END - timedelta(hours=10), END - timedelta(hours=5)
    root = span(other, 1, start + timedelta(hours=1))
    late = span(other, 1, end + timedelta(hours=1), trace_id=root["trace_id"])
    early = span(other, 1, start - timedelta(hours=1))
    early_late = span(other, 1, start + timedelta(hours=2), trace_id=early["trace_id"])
    for row in (root, late, early, early_late):  # one write each: partial rows
        assert write_spans(store, [row]) == 1
    parts = f"SELECT count() FROM {store.table('trace_totals')} WHERE org_id = {other}"
    assert store.client.query(parts).result_rows[0][0] == 4
    scope = Scope(org_id=other, role=Role.ADMIN)

    def traces(since: datetime, until: datetime) -> int:
        spec = FilterSpec(relative=None, start=since, end=until)
        query = MetricQuery(series=("trace_count.count",), filters=spec, bucket=None)
        try:
            answer = run_metrics(store.engine, scope, query, now=END)
        finally:  # the settings it read stay out of later tests' (test_cluster.py's command)
            get_settings.cache_clear()
        return int(answer.frame["trace_count.count"].item())

    assert traces(start, end) == 1  # the root's trace; the early one starts before
    assert traces(start - timedelta(hours=2), end) == 2
    assert traces(end, END) == 0  # the late span's window: its trace started earlier


def test_a_filter_reads_the_stored_rows_and_the_folded_copies_newest_decides(store):
    """A page filtered by a model reads the stored rows as they are, with no newest-copy pick
    (`LIMIT 1 BY`) over the window (at 10M spans a 30-day page's pick passed the read's memory
    bound): once folded, a span whose later copy left the model is not listed, one whose
    later copy came to it is."""
    from sqlalchemy import event

    when = END - timedelta(hours=3)
    other = 9_998  # an org of this test's own
    leaves = span(other, 1, when, model="m-a", duration_ms=100.0)
    comes = span(other, 1, when, model="m-b", duration_ms=200.0)
    stays = span(other, 1, when, model="m-a", duration_ms=300.0)
    assert write_spans(store, [leaves, comes, stays]) == 3
    write_later_copy(store, [dict(leaves, model="m-b"), dict(comes, model="m-a")])
    scope = Scope(org_id=other, role=Role.ADMIN)
    window = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END)
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        page = list_spans(
            store.engine, scope, window.replace(models=("m-a",)), sort="duration_ms", now=END
        )
        narrowed_sql = list(seen)
        seen.clear()
        list_spans(store.engine, scope, window, sort="duration_ms", now=END)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert [(r["model"], r["duration_ms"]) for r in page.rows] == [("m-a", 300.0), ("m-a", 200.0)]
    assert narrowed_sql and seen
    assert not any("LIMIT 1 BY" in s for s in narrowed_sql + seen)


def test_only_the_reads_own_memory_bound_asks_to_narrow_it(store, monkeypatch):
    """A read past its own bound is QueryTooLarge, through the hand-written reads too; the
    server's or a user's total (other reads hold the memory) stays a failure a retry may pass."""
    from observatory_core.base.errors import QueryTooLarge
    from observatory_core.storage.clickhouse import reads

    per_query = "Code: 241. DB::Exception: Query memory limit exceeded: would use 2.35 GiB"
    old_text = "Code: 241. DB::Exception: Memory limit (for query) exceeded: would use 2 GiB"
    total = "Code: 241. DB::Exception: Memory limit (total) exceeded: would use 30 GiB"
    assert reads.over_read_memory(Exception(per_query))
    assert reads.over_read_memory(Exception(old_text))
    assert not reads.over_read_memory(Exception(total))
    monkeypatch.setattr(reads, "READ_MEMORY", 64 * 1024)
    with pytest.raises(QueryTooLarge, match="shorter time range"):
        reads._query(store, "SELECT number FROM numbers(1000000) ORDER BY number DESC", {})


def test_only_the_tree_totals_ranking_runs_on_one_thread_and_only_on_chdb(store, monkeypatch):
    """Traces by a tree total on chDB: the ranking statement alone asks for one thread (its
    grouping cost about a quarter more CPU over two, docs/scale.md), the root rows' read keeps
    the engine's threads, and a server is left its own; the page is the same either way."""
    from sqlalchemy import event

    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    def page():
        seen.clear()
        scope = Scope(org_id=ORG, role=Role.ADMIN)
        spec = FilterSpec(relative="7d")
        return list_spans(
            store.engine, scope, spec, mode="traces", sort="total_cost_usd", limit=5, now=END
        )

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        one = page()
        threaded = [s for s in seen if "max_threads = 1" in s]
        assert len(threaded) == 1 and "trace_totals" in threaded[0], seen
        assert "JOIN" not in threaded[0]  # no trace written to since the pin: none joined
        assert len(seen) > 1  # the root rows' read, on the engine's threads
        # the ranking and the root rows read through the engine's block cache (`sql._asked`)
        assert len([s for s in seen if "use_uncompressed_cache = 1" in s]) == 2, seen
        monkeypatch.setattr(store.engine.dialect, "observatory_in_process", False)
        other = page()
        assert seen and not any("max_threads" in s for s in seen)
        assert not any("use_uncompressed_cache" in s for s in seen)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert one.rows and one.rows == other.rows


def test_a_first_page_by_a_tree_total_recomputes_a_trace_written_to_since_its_pin(store):
    """A first page by tree cost ranks the stored totals without the late traces' join when no
    trace was written to since its pin; a span stored with a later write (a write racing the
    page) sends it to the join, which sums that trace under the pin: its costly late span is
    left out, as polars on the spans under the pin leaves it (the stored totals alone would
    list that trace first)."""
    from sqlalchemy import event

    from tests.helpers import child_of

    org = 9_950
    when = END - timedelta(hours=2)
    roots = [span(org, 1, when - timedelta(minutes=i), input_cost_usd=0.1 * i) for i in range(6)]
    kids = [child_of(r, r["start_time"] + timedelta(seconds=1)) for r in roots]
    assert write_spans(store, roots + kids) == 12
    later = child_of(roots[1], when, input_cost_usd=500.0)
    names = layout.span_column_names()
    ahead = time.time_ns() // 1000 + 3_600_000_000  # written "an hour after" the page's pin
    store.client.insert(
        store.table("spans"),
        as_columns([later], names, ahead, lambda org, project: 0),
        column_names=list(names),
        column_oriented=True,
    )
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    scope = Scope(org_id=org, role=Role.ADMIN)
    window = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END)
    event.listen(store.engine, "before_cursor_execute", record)
    try:
        page = list_spans(
            store.engine, scope, window, mode="traces", sort="total_cost_usd", limit=3, now=END
        )
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    rows = pl.DataFrame(roots + kids).group_by("trace_id").agg(pl.col("total_cost_usd").sum())
    want = rows.sort(["total_cost_usd"], descending=True).head(3)
    assert [r["trace_id"] for r in page.rows] == want["trace_id"].to_list()
    assert [r["total_cost_usd"] for r in page.rows] == pytest.approx(want["total_cost_usd"])
    assert sum("trace_totals" in s for s in seen) == 2, seen  # stored totals, then the join


@pytest.mark.parametrize("racing", [True, False])
@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_first_pages_by_tree_cost_with_late_traces_ties_and_a_root_after_the_pin(
    store, direction, racing
):
    """From review of the first page's ranking without the late join: runs of traces of one
    cost (the root's id orders them), traces written to after the pin whose stored totals
    would move them to the other end of the list (`racing`: the first page then joins), a
    trace whose root alone was written after the pin (listed by no page: late, but off the
    ranking, so the stored totals answer), both directions and limits around the page's end.
    Every walk and the count against polars on the spans under the pin."""
    from sqlalchemy import event

    from tests.chdb_store import with_store_ids
    from tests.helpers import child_of

    org = 9_952 + (direction == "asc") + 2 * racing
    when = END - timedelta(hours=2)
    costs = [0.3, 0.3, 0.3, 0.2, 0.2, 0.1, 0.1, 0.1, 0.05]
    roots = [
        span(org, 1, when - timedelta(minutes=i), input_cost_usd=c) for i, c in enumerate(costs)
    ]
    kids = [child_of(r, r["start_time"] + timedelta(seconds=1), input_cost_usd=0.01) for r in roots]
    pending = span(org, 1, when - timedelta(minutes=30), input_cost_usd=9.0)
    waiting = child_of(pending, when - timedelta(minutes=29), input_cost_usd=0.02)
    written = roots + kids + [waiting]
    assert write_spans(store, written) == len(written)
    # written "an hour after" any page's pin: a costly child of the cheapest trace (its
    # stored total tops the list), a cheap one of a costliest, and the pending trace's root
    late = [pending]
    if racing:
        late += [
            child_of(roots[-1], when, input_cost_usd=500.0),
            child_of(roots[0], when, input_cost_usd=0.0),
        ]
    names = layout.span_column_names()
    ahead = time.time_ns() // 1000 + 3_600_000_000
    store.client.insert(
        store.table("spans"),
        as_columns(late, names, ahead, lambda org, project: 0),
        column_names=list(names),
        column_oriented=True,
    )
    frame = pl.DataFrame(written, infer_schema_length=None).with_columns(id=pl.lit(0))
    frame = with_store_ids(frame, store)
    trees = frame.group_by("trace_id").agg(
        pl.col("total_cost_usd").sum(),
        pl.col("id").filter(pl.col("parent_span_id").is_null()).first().alias("root"),
    )
    trees = trees.filter(pl.col("root").is_not_null())  # the pending trace: no root yet
    want = trees.sort(["total_cost_usd", "root"], descending=direction == "desc")
    want = want.with_columns(pl.col("total_cost_usd").round(9))
    assert want.height == len(roots)
    scope = Scope(org_id=org, role=Role.ADMIN)
    window = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END)
    walk = dict(mode="traces", sort="total_cost_usd", direction=direction)
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    for limit in (2, 3, 5, 8, 9, 10):
        rows, cursor = [], None
        while True:
            seen.clear()
            event.listen(store.engine, "before_cursor_execute", record)
            try:
                page = list_spans(
                    store.engine, scope, window, limit=limit, cursor=cursor, now=END, **walk
                )
            finally:
                event.remove(store.engine, "before_cursor_execute", record)
            if cursor is None:  # a first page: joined only when a listed trace is late
                ranked = [s for s in seen if "max_threads = 1" in s]
                assert len(ranked) == 1 + racing and ("JOIN" in ranked[-1]) is racing, limit
            rows += page.rows
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        got = [(r["trace_id"], round(r["total_cost_usd"], 9)) for r in rows]
        assert got == list(want.select("trace_id", "total_cost_usd").iter_rows()), limit
    counted = list_spans(store.engine, scope, window, count=True, limit=3, now=END, **walk)
    assert counted.total == want.height
    assert [r["trace_id"] for r in counted.rows] == want["trace_id"].to_list()[:3]
