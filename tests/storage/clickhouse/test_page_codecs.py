"""Schema version 10: the columns a page of spans reads for its few rows alone
(`ddl.LZ4_COLUMNS`) compressed with LZ4 (a new store: test_ddl.py). A store at version 9 gets
the codec at its next open as the table's metadata alone, no part rewritten (a queued rewrite
held back the wrapper moves' mutations); its parts written after, and those merged, take LZ4,
and every row reads back the same."""

from __future__ import annotations

from observatory_core.storage.clickhouse import ddl
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import demo_rows, store_at_version

ROWS = demo_rows(300)
MORE = demo_rows(20, seed=11)
LZ4 = "CODEC(LZ4)"
ZSTD = "CODEC(ZSTD(1))"
# parts of one file per column even when small: the engine then counts each column's bytes
WIDE = "min_bytes_for_wide_part = 0, min_rows_for_wide_part = 0"


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


def _part_bytes(store, table: str) -> dict[str, dict[str, int]]:
    """Each active part of `table`: the compressed bytes of each of `ddl.LZ4_COLUMNS`."""
    rows = store.client.query(
        "SELECT name, column, column_data_compressed_bytes FROM system.parts_columns "
        "WHERE database = %(db)s AND table = %(t)s AND active AND column IN %(cols)s",
        parameters={"db": store.database, "t": table, "cols": list(ddl.LZ4_COLUMNS)},
    ).result_rows
    out: dict[str, dict[str, int]] = {}
    for part, column, size in rows:
        out.setdefault(part, {})[column] = int(size)
    return out


def _bytes_as(store, part: str, codec: str) -> dict[str, int]:
    """The compressed bytes `part`'s values of `ddl.LZ4_COLUMNS` take under `codec`, in the
    part's own order: the same values written to a table of their own declared with it."""
    types = dict(
        store.client.query(
            "SELECT name, type FROM system.columns WHERE database = %(db)s AND table = 'spans'",
            parameters={"db": store.database},
        ).result_rows
    )
    table = f"{store.database}.codec_reference"
    columns = ", ".join(f"`{n}` {types[n]} {codec}" for n in ddl.LZ4_COLUMNS)
    store.client.command(
        f"CREATE TABLE {table} ({columns}) ENGINE = MergeTree ORDER BY tuple() SETTINGS {WIDE}"
    )
    try:
        store.client.command(
            f"INSERT INTO {table} SELECT {', '.join(ddl.LZ4_COLUMNS)} FROM "
            f"{store.table('spans')} WHERE _part = '{part}' ORDER BY _part_offset"
        )
        (only,) = _part_bytes(store, "codec_reference").values()
        return only
    finally:
        store.client.command(f"DROP TABLE {table} SYNC")


def _parts_take(store, codec: str) -> dict[str, bool]:
    """Whether each active part's LZ4 columns take the bytes they would under `codec`."""
    return {
        part: sizes == _bytes_as(store, part, codec)
        for part, sizes in _part_bytes(store, "spans").items()
    }


def test_a_store_at_version_9_gets_lz4_at_its_next_open_its_parts_as_they_merge(chdb_session):
    url, store = store_at_version(chdb_session, "version_9", 9)
    sent: list[str] = []
    command = store.client.command
    store.client.command = lambda sql, *a, **k: sent.append(sql) or command(sql, *a, **k)
    try:
        store.client.command(f"ALTER TABLE {store.table('spans')} MODIFY SETTING {WIDE}")
        assert write_spans(store, ROWS) == len(ROWS)
        assert _codecs(store)["trace_id"] == ZSTD
        before, old = _stored(store), _part_bytes(store, "spans")
        assert len(before) == len(ROWS) and old
        assert all(_parts_take(store, ZSTD).values())

        del sent[:]
        assert ddl.apply_schema(store) == [10]
        assert ddl.apply_schema(store) == []  # nothing left: a second open sends nothing
        codecs = _codecs(store)
        assert {name: codecs[name] for name in ddl.LZ4_COLUMNS} == dict.fromkeys(
            ddl.LZ4_COLUMNS, LZ4
        )
        assert codecs["session_id"] == ZSTD
        # no part rewritten: no mutation sent or queued, the stored parts as they were
        assert not [s for s in sent if "REWRITE" in s or "MATERIALIZE" in s]
        mutations = store.client.query(
            "SELECT count() FROM system.mutations WHERE database = %(db)s AND table = 'spans' "
            "AND command LIKE '%%REWRITE%%'",
            parameters={"db": store.database},
        ).result_rows
        assert mutations == [(0,)]
        assert _part_bytes(store, "spans") == old
        assert all(_parts_take(store, ZSTD).values())
        assert _stored(store) == before  # the same rows, the same values

        # a part written after takes LZ4; the old ones keep ZSTD(1) until they merge
        assert write_spans(store, MORE) == len(MORE)
        new = set(_part_bytes(store, "spans")) - set(old)
        assert new and _parts_take(store, LZ4) == {p: p in new for p in _part_bytes(store, "spans")}
        store.client.command(f"OPTIMIZE TABLE {store.table('spans')} FINAL")
        assert all(_parts_take(store, LZ4).values())
        after = _stored(store)
        assert len(after) == len(ROWS) + len(MORE) and set(before) <= set(after)
    finally:
        store.client.command = command
        chdb_session.drop(store)


def test_cluster_ddl_changes_the_codecs_of_the_stored_spans_on_every_node():
    """On a cluster the stored table (`spans_local`) takes the codecs; the Distributed one
    stores nothing. No part is rewritten: they take the codecs as they merge."""
    text = ddl.ddl_text("observatory", "obs_cluster")
    for name in ddl.LZ4_COLUMNS:
        assert (
            f"ALTER TABLE observatory.spans_local ON CLUSTER obs_cluster MODIFY COLUMN `{name}` "
        ) in text
    assert "ALTER TABLE observatory.spans ON CLUSTER obs_cluster MODIFY COLUMN" not in text
    assert "REWRITE PARTS" not in text


def test_version_10_sends_the_types_it_was_released_with(monkeypatch):
    """The migration's statements are pinned: a later change of a column's type in the layout
    (here trace_id's made FixedString) cannot alter what version 10 sends to a store at 9."""
    from dataclasses import replace

    from observatory_core.storage.clickhouse import layout

    later = tuple(
        replace(c, type="FixedString(32)") if c.name == "trace_id" else c
        for c in layout.span_columns()
    )
    monkeypatch.setattr(layout, "span_columns", lambda: later)
    assert ddl._page_columns_lz4(ddl.Naming("observatory")) == [
        "ALTER TABLE observatory.spans MODIFY COLUMN `trace_id` String CODEC(LZ4)",
        "ALTER TABLE observatory.spans MODIFY COLUMN `span_id` String CODEC(LZ4)",
        "ALTER TABLE observatory.spans MODIFY COLUMN `name` String CODEC(LZ4)",
        "ALTER TABLE observatory.spans MODIFY COLUMN `user_id` Nullable(String) CODEC(LZ4)",
    ]
