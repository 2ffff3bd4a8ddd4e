"""Schema version 10: the columns a page of spans reads for its few rows alone
(`ddl.LZ4_COLUMNS`) compressed with LZ4 (a new store: test_ddl.py); a store at version 9 gets
it at its next open with its stored parts rewritten in the background, and every row reads back
the same."""

from __future__ import annotations

import time

from observatory_core.storage.clickhouse import ddl
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import demo_rows, store_at_version

ROWS = demo_rows(300)
LZ4 = "CODEC(LZ4)"


def _codecs(store) -> dict[str, str]:
    rows = store.client.query(
        "SELECT name, compression_codec FROM system.columns "
        "WHERE database = %(db)s AND table = 'spans'",
        parameters={"db": store.database},
    ).result_rows
    return dict(rows)


def _stored(store) -> list[tuple]:
    """Every stored row's identity and the columns version 10 changes, in key order."""
    columns = ", ".join(("org_id", "start_time", *ddl.LZ4_COLUMNS, "id", "duration_ms"))
    return store.client.query(
        f"SELECT {columns} FROM {store.table('spans')} ORDER BY org_id, start_time, trace_id, span_id"
    ).result_rows


def _active_parts(store) -> set[str]:
    rows = store.client.query(
        "SELECT name FROM system.parts WHERE database = %(db)s AND table = 'spans' AND active",
        parameters={"db": store.database},
    ).result_rows
    return {name for (name,) in rows}


def _wait_for_mutations(store, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    query = (
        "SELECT count() FROM system.mutations WHERE database = %(db)s AND table = 'spans' "
        "AND NOT is_done"
    )
    while store.client.query(query, parameters={"db": store.database}).result_rows[0][0]:
        assert time.monotonic() < deadline, "the rewrite of the parts did not finish"
        time.sleep(0.1)


def test_a_store_at_version_9_gets_lz4_at_its_next_open_its_parts_rewritten(chdb_session):
    url, store = store_at_version(chdb_session, "version_9", 9)
    try:
        assert write_spans(store, ROWS) == len(ROWS)
        assert _codecs(store)["trace_id"] == "CODEC(ZSTD(1))"
        before, parts = _stored(store), _active_parts(store)
        assert len(before) == len(ROWS) and parts

        assert ddl.apply_schema(store) == [10]
        assert ddl.apply_schema(store) == []  # nothing left: a second open sends nothing
        codecs = _codecs(store)
        assert {name: codecs[name] for name in ddl.LZ4_COLUMNS} == dict.fromkeys(
            ddl.LZ4_COLUMNS, LZ4
        )
        assert codecs["session_id"] == "CODEC(ZSTD(1))"
        _wait_for_mutations(store)
        assert not parts & _active_parts(store)  # every stored part rewritten
        assert _stored(store) == before  # the same rows, the same values
        # a span written after reads back too
        more = demo_rows(20, seed=11)
        assert write_spans(store, more) == len(more)
        assert len(_stored(store)) == len(ROWS) + len(more)
    finally:
        chdb_session.drop(store)


def test_cluster_ddl_changes_the_codecs_of_the_stored_spans_on_every_node():
    """On a cluster the stored table (`spans_local`) takes the codecs; the Distributed one
    stores nothing. The parts are not rewritten there (`REWRITE PARTS` is ClickHouse 25.10's):
    they take the codecs as they merge."""
    text = ddl.ddl_text("observatory", "obs_cluster")
    for name in ddl.LZ4_COLUMNS:
        assert (
            f"ALTER TABLE observatory.spans_local ON CLUSTER obs_cluster MODIFY COLUMN `{name}` "
        ) in text
    assert "ALTER TABLE observatory.spans ON CLUSTER obs_cluster MODIFY COLUMN" not in text
    assert "REWRITE PARTS" not in text
