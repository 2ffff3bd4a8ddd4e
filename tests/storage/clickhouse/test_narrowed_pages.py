"""Pages by cost, duration or tokens on the span store read among the spans of a stretch of the
window's first stored copies (traces/narrowed_pages.py): racing copies whose older copy sorts
into a page and newest does not (and the reverse), older copies that pass a filter the newest
fails, ties on the key across the stretch's edge and the pages' ends, later pages, both
directions, the pin. The reference: polars over the stored copies themselves, each span its
newest copy under the pin, sorted by (key, id) (the id, a hash of the identity, read per copy)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import event

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
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


def _copy(store, org: int, span_ids: list[str], later_us: int = 1, **values) -> None:
    """A racing writer's later copy of these spans, with other values."""
    table = store.table("spans")
    listed = ", ".join(f"'{s}'" for s in span_ids)
    changed = ", ".join(f"{v!r} AS {c}" for c, v in values.items())
    store.client.command(
        f"INSERT INTO {table} SELECT * REPLACE (version + {later_us} AS version, {changed}) "
        f"FROM {table} WHERE org_id = {org} AND span_id IN ({listed})"
    )


def _expected(store, org: int, pin: int, key: str, direction: str, status: str | None):
    """The span ids a walk should list, in order: each span's newest copy under the pin."""
    result = store.client.query(
        f"SELECT span_id, {key}, status, version, intDiv(cityHash64(org_id, trace_id, span_id), 2)"
        f" FROM {store.table('spans')} WHERE org_id = {org}"
    )
    copies = pl.DataFrame(
        result.result_rows, schema=["span_id", "key", "status", "version", "id"], orient="row"
    )
    newest = (
        copies.filter(pl.col("version") <= pin)
        .sort("version")
        .group_by("span_id")
        .agg(pl.col("key").last(), pl.col("status").last(), pl.col("id").last())
    )
    if status is not None:
        newest = newest.filter(pl.col("status") == status)
    desc = direction == "desc"
    return newest.sort(["key", "id"], descending=[desc, desc])["span_id"].to_list()


def _walk(store, scope, spec, sort: str, direction: str, limit: int, after_first=None):
    """Every page's span ids in order, and the pin of the first page."""
    ids, cursor, pin = [], None, None
    while True:
        page = list_spans(
            store.engine,
            scope,
            spec,
            sort=sort,
            direction=direction,
            limit=limit,
            cursor=cursor,
            now=END,
        )
        assert len(page.rows) <= limit
        ids += [r["span_id"] for r in page.rows]
        if not page.next_cursor:
            return ids, pin if pin is not None else 2**63 - 1
        if pin is None:
            pin = decode_cursor(page.next_cursor, sort, direction).max_id
            if after_first is not None:
                after_first()
        cursor = page.next_cursor


def _statements(store):
    """The statements that sort (the stretches and the pages), as sent."""
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        if "ORDER BY" in statement:
            sent.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    return sent, lambda: event.remove(store.engine, "before_cursor_execute", record)


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_racing_copies_that_move_a_span_across_the_edge_are_judged_by_the_newest(
    merges_stopped, direction
):
    """Many spans whose older copy is the most expensive (or cheapest) and whose newest is not
    fill the first stretch: their newest copies sort far later, and the spans between are not
    in the stretch, so only the rows up to the edge may be taken from it. The reverse too: an
    older copy far down, the newest at the top; and older errors whose newest is ok."""
    store, org = merges_stopped, 9_891 if direction == "desc" else 9_890
    when = END - timedelta(hours=1)
    rows = [
        span(org, 1, when - timedelta(seconds=i), status="error" if i % 4 else "ok",
             duration_ms=100.0 + i, input_cost_usd=0.01 * (i + 1))
        for i in range(40)
    ]  # fmt: skip
    assert write_spans(store, rows) == len(rows)
    ids = [r["span_id"] for r in rows]
    top, bottom = (10.0, -1.0) if direction == "desc" else (-1.0, 10.0)
    _copy(store, org, ids[:14], duration_ms=top, total_cost_usd=top)  # all at the top...
    _copy(store, org, ids[:14], later_us=2, duration_ms=bottom, total_cost_usd=bottom)  # ...then
    _copy(store, org, ids[30:33], duration_ms=top, total_cost_usd=top)  # moved to the top
    _copy(store, org, ids[20:24], status="ok")
    _copy(store, org, ids[24:26], status="error")
    scope = Scope(org_id=org, role=Role.ADMIN)
    window = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END)
    sent, stop = _statements(store)
    try:
        for sort, key in (("total_cost_usd", "total_cost_usd"), ("duration_ms", "duration_ms")):
            for limit in (3, 4):
                for status in ("error", None):
                    spec = window.replace(statuses=(status,)) if status else window
                    walked, pin = _walk(store, scope, spec, sort, direction, limit)
                    want = _expected(store, org, pin, key, direction, status)
                    assert walked == want, (sort, limit, status)
    finally:
        stop()
    assert any("cityHash64" in s and "LIMIT 1 BY" not in s for s in sent)  # stretches were read


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_ties_on_the_key_are_ordered_by_the_id_across_edges_and_pages(merges_stopped, direction):
    """Errors that all cost 0 (the demo's), so the page is ordered by the id alone: the stretch's
    edge falls inside the ties. Racing copies make some cost more, or 0 again, or ok."""
    store, org = merges_stopped, 9_889 if direction == "desc" else 9_888
    when = END - timedelta(hours=2)
    rows = [
        span(org, 1, when - timedelta(seconds=i), status="error", input_tokens=7)
        for i in range(45)
    ]  # fmt: skip
    assert write_spans(store, rows) == len(rows)
    ids = [r["span_id"] for r in rows]
    _copy(store, org, ids[0:45:6], total_cost_usd=0.5, total_tokens=9)
    _copy(store, org, ids[0:45:12], later_us=2, total_cost_usd=0.0, total_tokens=7)
    _copy(store, org, ids[3:45:7], status="ok")
    scope = Scope(org_id=org, role=Role.ADMIN)
    window = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END)

    def arrive() -> None:
        # after the first page: a later copy flipping spans of the next pages, and a new span;
        # the pin keeps both out of the walk
        _copy(store, org, ids[10:20], later_us=10**12, total_cost_usd=9.0, status="ok")
        write_spans(store, [span(org, 1, when, status="error")])

    for sort in ("total_cost_usd", "total_tokens"):
        for limit in (2, 5):
            for status in ("error", None):
                spec = window.replace(statuses=(status,)) if status else window
                walked, pin = _walk(store, scope, spec, sort, direction, limit)
                assert walked == _expected(store, org, pin, sort, direction, status)
    spec = window.replace(statuses=("error",))
    walked, pin = _walk(store, scope, spec, "total_cost_usd", direction, 3, arrive)
    assert walked == _expected(store, org, pin, "total_cost_usd", direction, "error")


def test_a_filter_the_stretches_hold_too_few_matches_of_is_read_from_the_whole_window(
    merges_stopped,
):
    """The most expensive spans' older copies are errors and their newest are not: they fill
    both stretches (judged on the copies) without matching, so the page is read from the whole
    window, and holds the cheaper true errors."""
    store, org = merges_stopped, 9_887
    when = END - timedelta(hours=2)
    costly = [
        span(org, 1, when - timedelta(seconds=i), status="error", input_cost_usd=5.0 + i)
        for i in range(150)
    ]
    cheap = [
        span(org, 1, when - timedelta(minutes=5, seconds=i), status="error", input_cost_usd=0.1)
        for i in range(3)
    ]
    assert write_spans(store, costly + cheap) == len(costly) + len(cheap)
    _copy(store, org, [r["span_id"] for r in costly], status="ok")
    scope = Scope(org_id=org, role=Role.ADMIN)
    spec = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END, statuses=("error",))
    sent, stop = _statements(store)
    try:
        first = list_spans(store.engine, scope, spec, sort="total_cost_usd", limit=2, now=END)
    finally:
        stop()
    assert len(sent) == 5, sent  # two stretches (the stretch and the page each), then the window
    want = _expected(store, org, 2**63 - 1, "total_cost_usd", "desc", "error")
    assert sorted(want) == sorted(r["span_id"] for r in cheap)
    assert [r["span_id"] for r in first.rows] == want[:2]
    walked, _ = _walk(store, scope, spec, "total_cost_usd", "desc", 2)
    assert walked == want


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_an_edge_inside_the_ties_bounds_the_id_too(merges_stopped, direction):
    """A stretch of copies that mostly do not count (older errors whose newest is ok) ends on
    the first tie at cost 0; spans whose older copy cost more and newest costs 0 are in the
    stretch, but those past the edge's id must wait for their turn: a bound on the cost alone
    would put them on the page ahead of the ties between."""
    store, org = merges_stopped, 9_886 if direction == "desc" else 9_885
    when = END - timedelta(hours=3)
    rows = [span(org, 1, when - timedelta(seconds=i), status="error") for i in range(40)]
    assert write_spans(store, rows) == len(rows)
    ids = [r["span_id"] for r in rows]
    ahead = 0.5 if direction == "desc" else -0.5
    _copy(store, org, ids[:11], total_cost_usd=ahead)  # 11 copies ahead of the ties...
    _copy(store, org, ids[:7], later_us=2, total_cost_usd=ahead, status="ok")  # 7 then ok
    _copy(store, org, ids[7:11], later_us=2, total_cost_usd=0.0)  # and 4 back among the ties
    scope = Scope(org_id=org, role=Role.ADMIN)
    spec = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END, statuses=("error",))
    walked, pin = _walk(store, scope, spec, "total_cost_usd", direction, 2)
    assert walked == _expected(store, org, pin, "total_cost_usd", direction, "error")


def test_a_first_page_is_read_from_its_stretch(merges_stopped):
    """Two statements, the stretch and the page (not the plain read after them): the stretch's
    start times, as the store sends them, find its spans' copies."""
    store, org = merges_stopped, 9_884
    when = END - timedelta(hours=4)
    rows = [span(org, 1, when - timedelta(seconds=i, microseconds=7 * i)) for i in range(30)]
    assert write_spans(store, rows) == len(rows)
    scope = Scope(org_id=org, role=Role.ADMIN)
    spec = FilterSpec(relative=None, start=when - timedelta(hours=1), end=END)
    sent, stop = _statements(store)
    try:
        page = list_spans(store.engine, scope, spec, sort="duration_ms", limit=4, now=END)
    finally:
        stop()
    assert len(sent) == 2, sent
    want = _expected(store, org, 2**63 - 1, "duration_ms", "desc", None)
    assert [r["span_id"] for r in page.rows] == want[:4]
