"""Schema version 8 (the stored id, `spans` as the stored table): keyset pages
by start time with ties at every edge, in two orgs holding spans of the same identity; the same
walk over parts written before the id (computed on read) and after (stored); each statement of
a page carries the read bounds. The reference: polars over the rows written."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import event

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.traces.query import list_spans
from tests.helpers import span
from tests.storage.clickhouse.conftest import END

ORG, OTHER = 9_981, 9_982
WHEN = END - timedelta(hours=1)


def _rows() -> list[dict]:
    """24 spans of ORG at 4 start times (6 ties each), and the same identities in OTHER with
    the same times and another status: a leak or a tie lost at an edge shows in the walk."""
    out = []
    for i in range(24):
        at = WHEN - timedelta(minutes=i % 4)
        status = "error" if i % 3 else "ok"
        mine = span(
            ORG, 1, at, status=status, name=f"refund mine {i}", input_text=f"refund mine {i}"
        )
        out.append(mine)
        out.append(
            {
                **mine,
                "org_id": OTHER,
                "status": "ok" if status == "error" else "error",
                "name": f"refund other {i}",
                "input_text": f"refund other {i}",
            }
        )
    return out


def _walk(store, spec, limit, direction, mode="spans"):
    scope = Scope(org_id=ORG, role=Role.ADMIN)
    got, cursor = [], None
    for _ in range(200):
        page = list_spans(
            store.engine,
            scope,
            spec,
            mode=mode,
            direction=direction,
            limit=limit,
            cursor=cursor,
            now=END,
        )
        assert len(page.rows) <= limit
        got += [(r["span_id"], r["start_time"], r.get("name")) for r in page.rows]
        if not page.next_cursor:
            return got
        cursor = page.next_cursor
    raise AssertionError("no end to the walk")


def _check(store, rows, spec, status, search, direction):
    frame = pl.DataFrame(
        [{k: r[k] for k in ("org_id", "span_id", "start_time", "status", "name")} for r in rows]
    ).filter(pl.col("org_id") == ORG)
    if status:
        frame = frame.filter(pl.col("status") == status)
    if search:
        frame = frame.filter(pl.col("name").str.to_lowercase().str.contains(search))
    for limit in (1, 4, 5, 6, 7):
        got = _walk(store, spec, limit, direction)
        ids = [g[0] for g in got]
        assert len(ids) == len(set(ids)), (limit, "a span listed twice")
        assert set(ids) == set(frame["span_id"]), (limit, status, search)
        assert all("mine" in g[2] for g in got), "a span of another org"
        times = [g[1] for g in got]
        assert times == sorted(times, reverse=direction == "desc")


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_ties_at_every_edge_and_a_twin_org_walk_to_the_rows_written(chdb_store, direction):
    rows = _rows()
    assert write_spans(chdb_store, rows) == len(rows)
    window = FilterSpec(relative=None, start=WHEN - timedelta(hours=1), end=END)
    try:
        for status, search in (
            (None, None),
            ("error", None),
            (None, "refund mine 1"),
            ("ok", "refund"),
        ):
            spec = window
            if status:
                spec = spec.replace(statuses=(status,))
            if search:
                spec = spec.replace(search=search)
            _check(chdb_store, rows, spec, status, search, direction)
    finally:
        chdb_store.client.command(
            f"DELETE FROM {chdb_store.table('spans')} WHERE org_id IN ({ORG}, {OTHER})"
        )


def test_parts_written_before_the_id_page_as_after_it_is_stored(chdb_store):
    """The id of parts without it (computed on read) and the stored one give the same walk."""
    rows = _rows()
    table = chdb_store.table("spans")
    try:
        # a part written as version 7 left it: the column dropped, rows written, then added
        chdb_store.client.command(f"ALTER TABLE {table} DROP COLUMN id SETTINGS mutations_sync=2")
        chdb_store.client.command(f"SYSTEM STOP MERGES {table}")
        assert write_spans(chdb_store, rows) == len(rows)
        from observatory_core.storage.clickhouse import layout

        chdb_store.client.command(f"ALTER TABLE {table} ADD COLUMN {layout.SPAN_ID_COLUMN}")
        missing = chdb_store.client.query(
            "SELECT count() FROM system.parts_columns WHERE database = %(db)s AND "
            "table = 'spans' AND active AND column = 'id'",
            parameters={"db": chdb_store.database},
        ).result_rows[0][0]
        assert missing == 0  # every part computes it on read
        window = FilterSpec(relative=None, start=WHEN - timedelta(hours=1), end=END)
        before = {lim: _walk(chdb_store, window, lim, "desc") for lim in (4, 5)}
        chdb_store.client.command(f"SYSTEM START MERGES {table}")
        chdb_store.client.command(
            f"ALTER TABLE {table} MATERIALIZE COLUMN id SETTINGS mutations_sync = 2"
        )
        after = {lim: _walk(chdb_store, window, lim, "desc") for lim in (4, 5)}
        assert before == after
        assert {g[0] for g in after[4]} == {r["span_id"] for r in rows if r["org_id"] == ORG}
    finally:
        chdb_store.client.command(f"SYSTEM START MERGES {table}")
        chdb_store.client.command(f"DELETE FROM {table} WHERE org_id IN ({ORG}, {OTHER})")


def test_each_statement_of_a_spans_mode_page_carries_the_memory_bound(chdb_store):
    rows = _rows()
    assert write_spans(chdb_store, rows) == len(rows)
    sent: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    event.listen(chdb_store.engine, "after_cursor_execute", seen)
    try:
        window = FilterSpec(relative=None, start=WHEN - timedelta(hours=1), end=END)
        _walk(chdb_store, window, 5, "desc")
    finally:
        event.remove(chdb_store.engine, "after_cursor_execute", seen)
        chdb_store.client.command(
            f"DELETE FROM {chdb_store.table('spans')} WHERE org_id IN ({ORG}, {OTHER})"
        )
    pages = [s for s in sent if "ORDER BY" in s and "spans" in s]
    assert pages
    assert all("max_memory_usage" in s for s in pages), pages[0][-300:]


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_traces_mode_roots_with_ties_and_a_twin_org(chdb_store, direction):
    """Traces mode keeps its root stretches (read from the stored table): every span
    here is a root of its own trace."""
    rows = _rows()
    assert write_spans(chdb_store, rows) == len(rows)
    window = FilterSpec(relative=None, start=WHEN - timedelta(hours=1), end=END)
    mine = pl.DataFrame([{k: r[k] for k in ("org_id", "span_id", "status")} for r in rows]).filter(
        pl.col("org_id") == ORG
    )
    try:
        for status in (None, "error"):
            spec = window.replace(statuses=(status,)) if status else window
            want = mine.filter(pl.col("status") == status) if status else mine
            for limit in (1, 4, 5, 7):
                got = _walk(chdb_store, spec, limit, direction, mode="traces")
                ids = [g[0] for g in got]
                assert len(ids) == len(set(ids)), (limit, status)
                assert set(ids) == set(want["span_id"]), (limit, status)
                assert all("mine" in g[2] for g in got)
    finally:
        chdb_store.client.command(
            f"DELETE FROM {chdb_store.table('spans')} WHERE org_id IN ({ORG}, {OTHER})"
        )


def test_the_old_derived_table_still_reads_a_store_at_version_8(chdb_store):
    """A process of the release before (rolling upgrade) names its computed hash `id` over a
    table that now has a stored `id`: same rows, same order."""
    rows = _rows()
    assert write_spans(chdb_store, rows) == len(rows)
    t = chdb_store.table("spans")
    try:
        old = chdb_store.client.query(
            "SELECT spans.span_id, spans.id FROM (SELECT spans.`span_id`, spans.`start_time`, "
            "spans.`org_id`, intDiv(cityHash64(spans.org_id, spans.trace_id, spans.span_id), 2) "
            f"AS id FROM {t} AS spans WHERE spans.org_id = {ORG}) AS spans "
            f"WHERE spans.org_id = {ORG} ORDER BY spans.start_time DESC, spans.id DESC LIMIT 7"
        ).result_rows
        new = chdb_store.client.query(
            f"SELECT spans.span_id, spans.id FROM {t} AS spans WHERE spans.org_id = {ORG} "
            "ORDER BY spans.start_time DESC, spans.id DESC LIMIT 7"
        ).result_rows
        assert old == new and len(new) == 7
    finally:
        chdb_store.client.command(f"DELETE FROM {t} WHERE org_id IN ({ORG}, {OTHER})")
