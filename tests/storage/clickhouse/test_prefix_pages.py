"""Pages by start time on the span store (read within a stretch of the window's first stored
copies until schema version 8, in one statement since: the cases stay): racing copies at a page's edge, an older copy that
matches a filter its newest copy does not (and the reverse), the pin, and a filter whose stretches
hold too few matches, so the page is read from the whole window. The reference: polars over
the stored copies themselves, each span judged by its newest copy under the pin."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import event

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.clickhouse.fold_copies import fold_copies
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.traces.cursor import decode_cursor
from observatory_core.traces.query import list_spans
from tests.helpers import span
from tests.storage.clickhouse.conftest import END


@pytest.fixture
def merges_stopped(chdb_store):
    """The older copies kept (a merge keeps the newest alone)."""
    table = chdb_store.table("spans")
    chdb_store.client.command(f"SYSTEM STOP MERGES {table}")
    yield chdb_store
    chdb_store.client.command(f"SYSTEM START MERGES {table}")


def _copy(store, org: int, span_ids: list[str], status: str, later_us: int = 1) -> None:
    """A racing writer's later copy of these spans, with another status."""
    table = store.table("spans")
    listed = ", ".join(f"'{s}'" for s in span_ids)
    store.client.command(
        f"INSERT INTO {table} SELECT * REPLACE (version + {later_us} AS version, '{status}' AS "
        f"status) FROM {table} WHERE org_id = {org} AND span_id IN ({listed})"
    )
    # as schema version 7 and `clickhouse-fold-copies` leave them (a delete is a mutation,
    # which stopped merges would hold back)
    store.client.command(f"SYSTEM START MERGES {table}")
    fold_copies(store)


def _expected(store, org: int, pin: int, status: str | None) -> list[str]:
    """The span ids a walk should list, newest first: each span's newest copy under the pin."""
    result = store.client.query(
        f"SELECT span_id, start_time, status, version FROM {store.table('spans')} "
        f"WHERE org_id = {org}"
    )
    copies = pl.DataFrame(
        result.result_rows, schema=["span_id", "start_time", "status", "version"], orient="row"
    )
    newest = (
        copies.filter(pl.col("version") <= pin)
        .sort("version")
        .group_by("span_id")
        .agg(pl.col("start_time").last(), pl.col("status").last())
    )
    if status is not None:
        newest = newest.filter(pl.col("status") == status)
    return newest.sort("start_time", descending=True)["span_id"].to_list()


def _walk(
    store, scope, spec, limit: int, after_first=None, direction: str = "desc"
) -> tuple[list[str], int]:
    """Every page's span ids in order, and the pin of the first page."""
    ids, cursor, pin = [], None, None
    while True:
        page = list_spans(
            store.engine, scope, spec, direction=direction, limit=limit, cursor=cursor, now=END
        )
        assert len(page.rows) <= limit
        ids += [r["span_id"] for r in page.rows]
        if not page.next_cursor:
            return ids, pin if pin is not None else 2**63 - 1
        if pin is None:
            pin = decode_cursor(page.next_cursor, "start_time", direction).max_id
            if after_first is not None:
                after_first()
        cursor = page.next_cursor


def test_racing_copies_at_page_edges_are_judged_by_the_newest_copy_under_the_pin(
    merges_stopped,
):
    store, org = merges_stopped, 9_995
    when = END - timedelta(hours=1)
    rows = [
        span(org, 1, when - timedelta(minutes=i), status="error" if i % 3 else "ok")
        for i in range(24)
    ]
    assert write_spans(store, rows) == len(rows)
    ids = [r["span_id"] for r in rows]
    # at the edges of pages of 3 and 4: an older copy matching "error" whose newest is "ok",
    # and an older "ok" whose newest is "error"; one span copied twice
    _copy(store, org, [ids[2], ids[4], ids[8], ids[11]], "ok")
    _copy(store, org, [ids[3], ids[6], ids[12]], "error")
    _copy(store, org, [ids[4]], "error", later_us=2)
    scope = Scope(org_id=org, role=Role.ADMIN)
    window = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END)

    arrived: list[dict] = []

    def arrive() -> None:
        # after the first page: a new span at the top, and a later copy of one of the next
        # pages' spans flipping its status; the pin keeps both out of the walk
        top = when + timedelta(minutes=len(arrived) + 1)
        arrived.append(span(org, 1, top, status="error"))
        write_spans(store, arrived[-1:])
        _copy(store, org, [ids[9], ids[10]], "ok", later_us=10**12)

    for limit in (3, 4):
        for status in ("error", "ok", None):
            spec = window.replace(statuses=(status,)) if status else window
            walked, pin = _walk(store, scope, spec, limit, arrive if limit == 3 else None)
            assert walked == _expected(store, org, pin, status), (limit, status)
            assert len(set(walked)) == len(walked)


def test_a_filter_the_stretches_hold_too_few_matches_of_is_read_from_the_whole_window(
    merges_stopped,
):
    """Many recent spans whose older copy is an error and newest is not (folded: the newest
    alone is stored) fill every stretch without matching: the page holds the older true
    errors alone."""
    store, org = merges_stopped, 9_994
    when = END - timedelta(hours=2)
    recent = [span(org, 1, when - timedelta(seconds=i), status="error") for i in range(150)]
    old = [span(org, 1, when - timedelta(hours=1, minutes=i), status="error") for i in range(3)]
    assert write_spans(store, recent + old) == len(recent) + len(old)
    _copy(store, org, [r["span_id"] for r in recent], "ok")
    scope = Scope(org_id=org, role=Role.ADMIN)
    spec = FilterSpec(relative=None, start=when - timedelta(hours=3), end=END, statuses=("error",))
    pages: list[str] = []

    def record(conn, cursor, statement, *args):
        if "ORDER BY" in statement:
            pages.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        first = list_spans(store.engine, scope, spec, limit=2, now=END)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert pages  # the copies folded, the page is read from the stored rows as they are
    want = _expected(store, org, 2**63 - 1, "error")
    assert want == [r["span_id"] for r in old]
    assert [r["span_id"] for r in first.rows] == want[:2]
    walked, _ = _walk(store, scope, spec, 2)
    assert walked == want


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_spans_sharing_a_start_time_across_edges_and_pages_are_listed_once(
    merges_stopped, direction
):
    """Runs of 7 spans with one start time (racing copies flipping some of them) straddle the
    stretches' edges and the pages' ends, either way round: each span listed once, in start
    time order, the set the newest copies give."""
    store, org = merges_stopped, 9_993 if direction == "desc" else 9_992  # an org each
    when = END - timedelta(hours=3)
    rows = [
        span(org, 1, when - timedelta(minutes=i // 7), status="error" if i % 2 else "ok")
        for i in range(42)
    ]
    assert write_spans(store, rows) == len(rows)
    ids = [r["span_id"] for r in rows]
    _copy(store, org, ids[1:42:5], "ok")
    _copy(store, org, ids[0:42:4], "error")
    starts = {r["span_id"]: r["start_time"] for r in rows}
    scope = Scope(org_id=org, role=Role.ADMIN)
    window = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END)
    for limit in (3, 5):
        for status in ("error", None):
            spec = window.replace(statuses=(status,)) if status else window
            walked, pin = _walk(store, scope, spec, limit, direction=direction)
            assert len(set(walked)) == len(walked), (limit, status)
            assert set(walked) == set(_expected(store, org, pin, status)), (limit, status)
            times = [starts[i] for i in walked]
            assert times == sorted(times, reverse=direction == "desc"), (limit, status)
