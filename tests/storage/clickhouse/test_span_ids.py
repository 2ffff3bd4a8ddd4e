"""Schema version 8: each span's id stored (`ddl._span_ids`), the hash of its identity the reads
computed for every row before; a fresh store has it, a store at version 7 gets it at its next
open with its stored parts rewritten in the background, and the reads answer the same ids."""

from __future__ import annotations

import time

import polars as pl

from observatory_core.storage.clickhouse import ddl
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import demo_rows, store_at_version

ROWS = demo_rows(300)


def _columns(store) -> dict[str, tuple[str, str, str]]:
    result = store.client.query(
        "SELECT name, type, default_kind, default_expression FROM system.columns "
        "WHERE database = %(db)s AND table = 'spans'",
        parameters={"db": store.database},
    )
    return {name: tuple(rest) for name, *rest in result.result_rows}


def _ids(store) -> pl.DataFrame:
    """Each stored row's id beside the hash of its identity, computed by the engine from the
    row's own columns (the expression the reads used before version 8)."""
    rows = store.client.query(
        "SELECT org_id, trace_id, span_id, id, "
        "intDiv(cityHash64(org_id, trace_id, span_id), 2) AS hashed "
        f"FROM {store.table('spans')}"
    ).result_rows
    return pl.DataFrame(
        rows, schema=["org_id", "trace_id", "span_id", "id", "hashed"], orient="row"
    )


def _check_ids(store) -> None:
    ids = _ids(store)
    assert ids.height == len(ROWS)
    assert (ids["id"] == ids["hashed"]).all()
    assert ids["id"].n_unique() == ids.height  # unique per span: keyset pages break ties by it
    assert ids["id"].max() < 2**63  # fits the other stores' signed 64-bit ids


def _wait_for_mutations(store, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    query = (
        "SELECT count() FROM system.mutations WHERE database = %(db)s AND table = 'spans' "
        "AND NOT is_done"
    )
    while store.client.query(query, parameters={"db": store.database}).result_rows[0][0]:
        assert time.monotonic() < deadline, "the ids' MATERIALIZE did not finish"
        time.sleep(0.1)


def _parts_without_ids(store) -> int:
    """Active parts of spans whose stored columns lack `id` (read as computed until then)."""
    return store.client.query(
        "SELECT count() FROM system.parts AS p WHERE p.database = %(db)s AND p.table = 'spans' "
        "AND p.active AND p.name NOT IN (SELECT name FROM system.parts_columns WHERE "
        "database = %(db)s AND table = 'spans' AND active AND column = 'id')",
        parameters={"db": store.database},
    ).result_rows[0][0]


def test_a_new_store_keeps_each_spans_id_as_the_hash_of_its_identity(chdb_session):
    store = chdb_session.store("span_ids_new")
    try:
        assert _columns(store)["id"] == (
            "UInt64",
            "MATERIALIZED",
            "intDiv(cityHash64(org_id, trace_id, span_id), 2)",
        )
        assert write_spans(store, ROWS) == len(ROWS)
        _check_ids(store)
        assert _parts_without_ids(store) == 0  # written by the insert itself
    finally:
        chdb_session.drop(store)


def test_a_store_at_version_7_gets_the_ids_at_its_next_open(chdb_session):
    url, store = store_at_version(chdb_session, "span_ids_v7", 7)
    try:
        assert write_spans(store, ROWS) == len(ROWS)
        assert "id" not in _columns(store)
    finally:
        store.close()
    store = open_span_store(url)  # applies version 8
    try:
        assert "id" in _columns(store)
        _check_ids(store)  # computed or stored, the same ids
        _wait_for_mutations(store)
        assert _parts_without_ids(store) == 0
        _check_ids(store)
        versions = store.client.query(
            f"SELECT version, count() FROM {store.table('schema_versions')} GROUP BY version "
            "ORDER BY version"
        ).result_rows
        assert versions == [(m.version, 1) for m in ddl.MIGRATIONS]
        # version 8 run again (an open that stopped before recording it): nothing changes
        before = _columns(store)
        (eight,) = [m for m in ddl.MIGRATIONS if m.version == 8]
        for statement in eight.statements(store.naming):
            store.client.command(statement)
        _wait_for_mutations(store)
        assert _columns(store) == before
        _check_ids(store)
    finally:
        store.close()
    store = open_span_store(url)  # opened again: no version applied twice
    try:
        versions = store.client.query(
            f"SELECT version, count() FROM {store.table('schema_versions')} GROUP BY version "
            "ORDER BY version"
        ).result_rows
        assert versions == [(m.version, 1) for m in ddl.MIGRATIONS]
        assert write_spans(store, ROWS) == 0  # all stored already
        _check_ids(store)
    finally:
        chdb_session.drop(store)


def test_on_a_cluster_the_ids_are_added_to_both_tables_and_materialized_on_every_shard():
    column = "`id` UInt64 MATERIALIZED intDiv(cityHash64(org_id, trace_id, span_id), 2)"
    assert ddl._span_ids(ddl.Naming("obs", "obs_cluster")) == [
        f"ALTER TABLE obs.spans_local ON CLUSTER obs_cluster ADD COLUMN IF NOT EXISTS {column}",
        f"ALTER TABLE obs.spans ON CLUSTER obs_cluster ADD COLUMN IF NOT EXISTS {column}",
        # queued, waited on by no one: the open does not grow with the store
        "ALTER TABLE obs.spans_local ON CLUSTER obs_cluster MATERIALIZE COLUMN id "
        "SETTINGS mutations_sync = 0",
    ]
