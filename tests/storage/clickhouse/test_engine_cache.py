"""The in-process engine keeps decompressed blocks between reads that ask (`connect.CHDB_OPTIONS`,
`sql._asked`): a read repeated is served from the cache, with the same rows as a read that
bypasses it, and a part rewritten (a mutation, as a wrapper move's) or added (an insert) is read
anew. test_builders.py: the traces by a tree total ask, and only on chDB."""

from __future__ import annotations

from observatory_core.storage.clickhouse.connect import CHDB_OPTIONS
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import demo_rows

ROWS = demo_rows(300)
MORE = demo_rows(40, seed=5)
WIDE = "min_bytes_for_wide_part = 0, min_rows_for_wide_part = 0"


def _hits(store) -> int:
    rows = store.client.query(
        "SELECT value FROM system.events WHERE event = 'UncompressedCacheHits'"
    ).result_rows
    return int(rows[0][0]) if rows else 0


def _read(store, cache: bool) -> list[tuple]:
    """Per trace of org 1: its spans, their names, cost and tokens, from `spans`."""
    return store.client.query(
        "SELECT trace_id, count(), arraySort(groupArray(name)), sum(total_cost_usd), "
        f"sum(total_tokens) FROM {store.table('spans')} WHERE org_id = 1 GROUP BY trace_id "
        f"ORDER BY trace_id SETTINGS use_uncompressed_cache = {int(cache)}"
    ).result_rows


def _reference(rows: list[dict]) -> list[tuple]:
    """Per trace of org 1: its spans and their names, computed in Python from the rows written
    (cost and tokens are compared with the read that bypasses the cache: a twin's restatement
    may move them)."""
    per: dict[str, list] = {}
    for r in rows:
        if r["org_id"] == 1:
            per.setdefault(r["trace_id"], []).append(r["name"])
    return [(t, len(names), sorted(names)) for t, names in sorted(per.items())]


def _same(got: list[tuple], want: list[tuple]) -> bool:
    return [g[:3] for g in got] == want


def test_the_engine_has_a_block_cache_that_reads_use_when_they_ask(chdb_store):
    store = chdb_store
    settings = dict(
        store.client.query(
            "SELECT name, value FROM system.server_settings WHERE name = 'uncompressed_cache_size'"
        ).result_rows
    )
    assert int(settings["uncompressed_cache_size"]) == CHDB_OPTIONS["uncompressed_cache_size"]
    used = store.client.query(
        "SELECT value FROM system.settings WHERE name = 'use_uncompressed_cache'"
    ).result_rows
    assert used == [("0",)]  # a statement asks for it (`sql._asked`)


def test_a_repeated_read_is_served_from_the_cache_and_sees_parts_rewritten_or_added(chdb_store):
    store = chdb_store
    # parts of one file per column even when small, as a store's grown parts are
    store.client.command(f"ALTER TABLE {store.table('spans')} MODIFY SETTING {WIDE}")
    assert write_spans(store, ROWS) == len(ROWS)
    want = _reference(ROWS)
    bypassed = _read(store, cache=False)
    assert want and _same(bypassed, want)

    first = _read(store, cache=True)
    hits = _hits(store)
    again = _read(store, cache=True)
    assert _hits(store) > hits  # the blocks the first read decompressed
    assert first == bypassed and again == bypassed

    # a mutation rewrites the parts (as a wrapper move's UPDATE): the cached blocks are not read
    store.client.command(
        f"ALTER TABLE {store.table('spans')} UPDATE name = concat(name, '!') WHERE org_id = 1",
        settings={"mutations_sync": 2},
    )
    renamed = [{**r, "name": r["name"] + "!"} if r["org_id"] == 1 else r for r in ROWS]
    assert _same(_read(store, cache=True), _reference(renamed))

    # an insert adds a part: its rows are read
    assert write_spans(store, MORE) == len(MORE)
    assert _same(_read(store, cache=True), _reference(renamed + MORE))
    assert _read(store, cache=True) == _read(store, cache=False)
