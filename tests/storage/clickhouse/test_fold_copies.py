"""Each span stored once: `fold_copies` deletes every span's older copies and nothing else,
at open (schema version 7) and on a cluster (fold_copies.py, docs/span-store-internals.md "Each span
once")."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.clickhouse import fold_copies as fold_module
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.connect import SpanStore, open_span_store
from observatory_core.storage.clickhouse.fold_copies import fold_copies
from observatory_core.storage.clickhouse.target import parse_target
from observatory_core.storage.clickhouse.writes import as_columns, write_spans
from tests.storage.clickhouse.conftest import demo_rows, store_at_version

ROWS = demo_rows(300, seed=23, days=3)


def _insert(store: SpanStore, rows: list[dict], version: int) -> None:
    """Rows inserted as they are at `version`, as a writer that raced before the turns did."""
    names = layout.span_column_names()
    store.client.insert(
        store.table("spans"),
        as_columns(rows, names, version, lambda org, project: 0),
        column_names=list(names),
        column_oriented=True,
    )


def _stored(store: SpanStore) -> pl.DataFrame:
    result = store.client.query(
        f"SELECT org_id, trace_id, span_id, version, status, start_time FROM {store.table('spans')}"
    )
    return pl.DataFrame(
        result.result_rows,
        schema=["org_id", "trace_id", "span_id", "version", "status", "start_time"],
        orient="row",
    )


def _copies(store: SpanStore) -> list[int]:
    """Versions for three rounds of copies, after the stored rows' own."""
    ((newest,),) = store.client.query(
        f"SELECT max(version) FROM {store.table('spans')}"
    ).result_rows
    return [int(newest) + k for k in (1, 2, 3)]


def _rollup_counts(store: SpanStore) -> tuple[int, int]:
    ((spans, errors),) = store.client.query(
        f"SELECT sum(span_count), sum(error_count) FROM {store.table('rollup_1day')}"
    ).result_rows
    return int(spans), int(errors)


def test_the_fold_keeps_each_spans_newest_copy_and_nothing_else(chdb_store):
    """Against polars on the raw rows: each span's rows of its largest version stay, every
    older copy goes (another status, another month's start, two later copies, another org's),
    copies sharing the newest version are left (the engine's merges may fold such a pair,
    same key and version, into one), and the rollups are not changed."""
    store = chdb_store
    table = store.table("spans")
    store.client.command(f"SYSTEM STOP MERGES {table}")  # copies kept as written
    assert write_spans(store, ROWS) == len(ROWS)
    first, second, third = _copies(store)
    orgs = sorted({r["org_id"] for r in ROWS})
    a = [r for r in ROWS if r["org_id"] == orgs[0]]
    b = [r for r in ROWS if r["org_id"] == orgs[1]]
    _insert(store, [dict(r, status="error") for r in a[:5]], first)
    _insert(store, [dict(a[5], start_time=a[5]["start_time"] - timedelta(days=40))], first)
    _insert(store, [a[6]], first)
    _insert(store, [dict(a[6], status="error")], second)
    _insert(store, [dict(b[0], status="error")], first)
    _insert(store, [a[7], dict(a[7], status="error")], third)
    before = _stored(store)
    rollups = _rollup_counts(store)
    newest = before.with_columns(
        pl.col("version").max().over(["org_id", "trace_id", "span_id"]).alias("newest")
    )
    want = newest.filter(pl.col("version") == pl.col("newest")).drop("newest")
    assert newest.filter(pl.col("version") < pl.col("newest")).height == 10
    # a delete is a mutation, which stopped merges hold back; a merge may now fold copies
    # of one key (the same start) itself, so the counts below are bounds
    store.client.command(f"SYSTEM START MERGES {table}")
    folded = fold_copies(store)
    assert set(folded.deleted) <= set(orgs[:2]) and sum(folded.deleted.values()) <= 10
    assert folded.deleted.get(orgs[0], 0) >= 1  # the moved copy: another key, never merged
    key = ["org_id", "trace_id", "span_id", "version", "status"]
    after = _stored(store)
    tied = pl.col("span_id") == a[7]["span_id"]
    assert sorted(after.filter(~tied).select(key).rows()) == sorted(
        want.filter(~tied).select(key).rows()
    )
    pair = after.filter(tied)
    assert 1 <= pair.height <= 2 and set(pair["version"]) == {third}
    assert after.height == len(ROWS) + pair.height - 1
    moved = after.filter(pl.col("span_id") == a[5]["span_id"])  # the newest: its start stays
    assert moved["start_time"].to_list() == [
        (a[5]["start_time"] - timedelta(days=40)).replace(tzinfo=None)
    ]
    assert _rollup_counts(store) == rollups  # the views' rows are not changed here
    assert fold_copies(store).deleted == {}  # nothing left to fold


def test_schema_version_7_folds_the_copies_a_store_held_before_it(chdb_session):
    url, store = store_at_version(chdb_session, "fold_at_open", 6)
    try:
        assert write_spans(store, ROWS[:50]) == 50
        _insert(store, [dict(r, status="error") for r in ROWS[:4]], _copies(store)[0])
        assert _stored(store).height == 54
    finally:
        store.close()
    store = open_span_store(url)  # applies version 7
    try:
        stored = _stored(store)
        assert stored.height == 50
        by_span = {r["span_id"]: r for r in stored.iter_rows(named=True)}
        assert all(by_span[r["span_id"]]["status"] == "error" for r in ROWS[:4])
        versions = store.client.query(f"SELECT version FROM {store.table('schema_versions')}")
        assert 7 in {v for (v,) in versions.result_rows}
    finally:
        chdb_session.drop(store)


class _Recorder:
    """A server answering the fold's reads; records what it is sent."""

    def __init__(self, answers: dict[str, list], pending: list[int]) -> None:
        self.answers, self.pending, self.sent = answers, pending, []

    def query(self, sql: str, parameters=None, settings=None, **kw):
        from types import SimpleNamespace

        self.sent.append(("query", sql, dict(settings or {})))
        if "mutations" in sql:
            return SimpleNamespace(result_rows=[(self.pending.pop(0) if self.pending else 0,)])
        rows = next((rows for key, rows in self.answers.items() if key in sql), [])
        return SimpleNamespace(result_rows=rows)

    def command(self, sql: str, parameters=None, settings=None, **kw):
        self.sent.append(("command", sql, dict(settings or {})))


def _server_store(pending: list[int]) -> tuple[SpanStore, _Recorder]:
    from datetime import UTC, datetime

    start = datetime(2026, 11, 3, 12, 0, 0, 250000, tzinfo=UTC)
    client = _Recorder(
        {
            "arrayFilter": [(5, "t1", "s1", [(100, start), (200, start)], 1)],
            "SELECT count() FROM obs.spans": [(1000,)],
            "system.settings": [(1,)],
        },
        pending,
    )
    target = parse_target("clickhouse://writer:pw@ch1.internal:8123/obs?cluster=obs_cluster")
    return SpanStore(target, client), client


def test_on_a_cluster_the_fold_deletes_on_every_shard_and_waits_for_every_node():
    store, client = _server_store(pending=[0, 2, 1, 0])  # none queued before: then 2, 1, 0
    folded = fold_copies(store)
    assert folded.deleted == {5: 2}
    (delete,) = [(sql, s) for kind, sql, s in client.sent if kind == "command"]
    sql, settings = delete
    assert sql.startswith("DELETE FROM obs.spans_local ON CLUSTER obs_cluster WHERE org_id = 5 ")
    assert "start_time >= toDateTime64('2026-11-03 12:00:00.250000', 6, 'UTC')" in sql
    assert "(trace_id, span_id, version) IN (('t1', 's1', 100), ('t1', 's1', 200))" in sql
    assert settings.get("distributed_ddl_task_timeout") == 0  # queued, not waited on per node
    assert settings.get("lightweight_deletes_sync") == 0  # waited on once, below
    waits = [sql for kind, sql, _ in client.sent if kind == "query" and "mutations" in sql]
    assert len(waits) == 4 and all("clusterAllReplicas(obs_cluster" in w for w in waits)


def test_a_fold_whose_deletes_are_not_applied_in_time_says_so(monkeypatch):
    store, _ = _server_store(pending=[0] + [1] * 1000)
    monkeypatch.setattr(fold_module, "WAIT_S", 0.2)
    with pytest.raises(DatabaseUnavailable, match="not yet applied the deletes of 2 older"):
        fold_copies(store)


def test_the_command_folds_the_copies_and_says_how_many(chdb_session, capsys):
    from observatory_core.__main__ import main

    url, store = store_at_version(chdb_session, "fold_command", 7)
    try:
        assert write_spans(store, ROWS[:20]) == 20
        _insert(store, [dict(r, status="error") for r in ROWS[:3]], _copies(store)[0])
        assert main(["clickhouse-fold-copies", "--to", url]) == 0
        out = capsys.readouterr().out
        assert (
            "Looking for spans stored more than once" in out
            and "Deleted 3 older copies of spans" in out
        )
        stored = _stored(store)
        assert stored.height == 20
        errors = set(stored.filter(pl.col("status") == "error")["span_id"])
        assert {r["span_id"] for r in ROWS[:3]} <= errors
        assert main(["clickhouse-fold-copies", "--to", url]) == 0
        assert "each span is stored once" in capsys.readouterr().out
    finally:
        chdb_session.drop(store)
