"""The span store on a cluster, its mutations: re-stamps, the unfinished and failing mutations
read on every node, the rollups' retention deletes and the back-fill on every shard, and the
worker's sentence for a node that fails (the cluster's statements: `test_cluster.py`)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import create_engine

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.clickhouse import rebuild, restamp
from tests.storage.clickhouse.test_cluster import ON, ONE_NODE, URL, _parses, _store

# -- retention: the stored rows a re-stamp finds, per org and project ------------------------

STALE = {
    "FROM obs.spans WHERE org_id IN": [(1, 101, 0, 12), (1, 102, 30, 5)],
    # a trace total written before schema version 6 (0) in the project of 7 days
    "FROM obs.trace_totals WHERE org_id IN": [(1, 101, 0, 3), (1, 102, 30, 2)],
}


def test_a_restamp_on_a_cluster_mutates_every_shards_local_spans(chdb_store):
    store, client = _store(URL, STALE)
    stamp = restamp.Stamp(1, 30, {101: 7})
    assert restamp.restamp(store, stamp) == 12
    (stale_read, _), (stale_totals, _) = client.of("query")
    assert "FROM obs.spans WHERE" in stale_read  # the Distributed table: every shard's rows
    assert "FROM obs.trace_totals WHERE" in stale_totals
    (mutation, settings), (totals, totals_settings) = client.of("command")
    assert mutation.startswith(f"ALTER TABLE obs.spans_local {ON} UPDATE retain_days = ")
    assert "WHERE org_id = 1 AND retain_days != " in mutation
    # the trace totals (schema version 6) re-stamped with the same days, on every shard
    assert totals == mutation.replace("obs.spans_local", "obs.trace_totals_local")
    assert totals_settings == settings
    # queued, waiting for no node: it is sent while the org's settings row is held
    queued = {
        "mutations_sync": 0,
        "distributed_ddl_output_mode": "throw",
        "distributed_ddl_task_timeout": 0,
    }
    assert settings == queued
    _parses(chdb_store, mutation)
    # the worker's run sends the same (under `org_stamp`'s hold of the row)
    store, client = _store(URL, {**STALE, "SELECT count()": [(0,)]})
    held = []

    @contextmanager
    def current(org_id):
        held.append(org_id)
        yield stamp

    assert restamp.reconcile(store, [stamp], current).spans == {1: 12} and held == [1]
    (mutation, settings), (totals, _) = client.of("command")
    assert mutation.startswith(f"ALTER TABLE obs.spans_local {ON} UPDATE ") and settings == queued
    assert totals.startswith(f"ALTER TABLE obs.trace_totals_local {ON} UPDATE ")


def test_unfinished_and_failing_mutations_are_read_on_every_node(chdb_store):
    store, client = _store(
        URL, {"latest_fail_reason != ''": [("ch2: Code: 241 ...",)], "SELECT count()": [(2,)]}
    )
    assert restamp.pending(store) == 2
    assert restamp.failing(store) == "ch2: Code: 241 ..."
    for text, _ in client.of("query"):
        assert "FROM clusterAllReplicas(obs_cluster, system.mutations) " in text
        assert "AND table IN ('spans_local', 'trace_totals_local') AND NOT is_done" in text
        _parses(chdb_store, text.replace("%(db)s", "'obs'"))
    assert "hostName()" in client.of("query")[1][0]
    # while one node has not finished, the worker's run sends nothing
    assert restamp.reconcile(store, [restamp.Stamp(1, 30)], lambda org: None) is None
    assert client.of("command") == []


def test_a_restamp_on_one_node_is_as_before():
    store, client = _store(ONE_NODE, {**STALE, "SELECT count()": [(0,)]})
    assert restamp.restamp(store, restamp.Stamp(1, 30, {101: 7})) == 12
    (mutation, settings), (totals, _) = client.of("command")
    assert mutation.startswith("ALTER TABLE obs.spans UPDATE retain_days = ")
    assert totals.startswith("ALTER TABLE obs.trace_totals UPDATE retain_days = ")
    assert settings == {"mutations_sync": 0}
    assert restamp.pending(store) == 0
    assert client.of("query")[-1][0] == (
        "SELECT count() FROM system.mutations WHERE database = %(db)s "
        "AND table IN ('spans', 'trace_totals') AND NOT is_done"
    )


def test_rollup_retention_on_a_cluster_deletes_on_every_shard(chdb_store):
    """The rows before each org's cutoff counted over every shard (the Distributed tables),
    deleted from each shard's `<table>_local` (ON CLUSTER, queued, not waited on), one
    statement per table and group of up to 500 orgs, a cutoff per distinct rollup days; a
    table with none gets no statement, an org that keeps
    its rollups is in none; a table with a mutation unfinished on any node waits."""
    from observatory_core.storage.clickhouse.rollup_retention import expire_rollups
    from observatory_core.storage.retention import Policy

    answers = {
        "FROM clusterAllReplicas(obs_cluster, system.mutations)": [("rollup_1day_local",)],
        "FROM obs.rollup_1min WHERE": [(1, 40), (3, 2)],
        "FROM obs.rollup_1hour WHERE": [(1, 4)],
    }
    store, client = _store(URL, answers)
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    policies = [Policy(1, 30, 60), Policy(2, None, None), Policy(3, 7, 10)]
    assert expire_rollups(store, policies, now) == {1: 44, 3: 2}
    reads = [text.split(" FROM ")[1].split()[0] for text, _ in client.of("query")]
    # the day's table is left for the next run: its last delete is still being applied
    assert reads == [
        "clusterAllReplicas(obs_cluster,",
        "obs.rollup_1min",
        "obs.rollup_1hour",
        "obs.rollup_actors_1hour",
    ]
    (minute, settings), (hour, _) = client.of("command")
    where = (
        "(org_id IN (1) AND bucket_start < toDateTime64('2026-09-21 12:00:00.000000', 6, 'UTC')) "
        "OR (org_id IN (3) AND bucket_start < toDateTime64('2026-11-10 12:00:00.000000', 6, 'UTC'))"
    )
    assert minute == f"DELETE FROM obs.rollup_1min_local {ON} WHERE {where}"
    assert hour == f"DELETE FROM obs.rollup_1hour_local {ON} WHERE {where}"
    assert settings["distributed_ddl_task_timeout"] == 0
    assert settings["lightweight_deletes_sync"] == 0
    _parses(chdb_store, minute)


def test_a_rollup_delete_the_store_refuses_is_one_sentence():
    """The worker's run says it (`DatabaseUnavailable`), it does not crash on the engine's
    error."""
    from observatory_core.storage.clickhouse.rollup_retention import expire_rollups
    from observatory_core.storage.retention import Policy

    store, client = _store(ONE_NODE, {"FROM obs.rollup_1min WHERE": [(1, 3)]})
    client.fail = "Code: 241. Memory limit exceeded"
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    with pytest.raises(DatabaseUnavailable, match="did not take the change .Code: 241"):
        expire_rollups(store, [Policy(1, 30, 60)], now)
    ((delete, settings),) = client.of("command")
    assert delete.startswith("DELETE FROM obs.rollup_1min WHERE (org_id IN (1) AND ")
    assert settings == {"lightweight_deletes_sync": 0}


# -- the latency bins' back-fill ----------------------------------------------------------------


def test_the_back_fill_on_a_cluster_inserts_into_this_nodes_shard(chdb_store):
    """Computed over every shard (the Distributed spans and rollup), inserted into the node's
    `rollup_1min_local` (the Distributed rollup has no sharding key to place a row by)."""
    day = date(2026, 11, 20)
    store, client = _store(URL, {"HAVING arraySum": [(1, day)]})
    assert rebuild.rebuild_bins(store).days == 1
    ((insert, settings),) = client.of("command")
    assert insert.startswith("INSERT INTO obs.rollup_1min_local (")
    assert "FROM obs.spans WHERE" in insert and "FROM obs.rollup_1min\n" in insert
    assert settings == {"distributed_product_mode": "global"}
    _parses(
        chdb_store,
        insert.replace("%(org)s", "1").replace("%(start)s", "now()").replace("%(end)s", "now()"),
    )


def test_the_worker_says_which_node_fails_and_how_to_kill_it(monkeypatch, chdb_store):
    from observatory_core.runtime.retention import restamp_span_store
    from observatory_core.storage.clickhouse import current

    store, client = _store(URL, {"latest_fail_reason != ''": [("ch2: Code: 241 ...",)]})
    monkeypatch.setattr(current, "span_store", lambda: store)
    # the rollups' part reads the settings (none here) and deletes nothing
    monkeypatch.setattr("observatory_core.runtime.retention.policies", lambda conn: {})
    said = restamp_span_store(engine=create_engine("sqlite://"))
    assert said.failed and "ch2: Code: 241 ..." in said.said
    kill = (
        "KILL MUTATION ON CLUSTER obs_cluster WHERE database = 'obs' "
        "AND table IN ('spans_local', 'trace_totals_local')"
    )
    assert f"({kill}): ch2" in said.said
    # a rollup delete that keeps failing is said too, with its own kill statement
    rollups = "'rollup_1min_local', 'rollup_1hour_local', 'rollup_1day_local'"
    kill_rollups = (
        "KILL MUTATION ON CLUSTER obs_cluster WHERE database = 'obs' "
        f"AND table IN ({rollups}, 'rollup_actors_1hour_local')"
    )
    assert "rollups keeps failing" in said.said and f"({kill_rollups}): ch2" in said.said
    _parses(chdb_store, kill_rollups)
    _parses(chdb_store, kill)
    assert client.of("command") == []
    one, _ = _store(ONE_NODE)
    assert restamp.kill_statement(one) == (
        "KILL MUTATION WHERE database = 'obs' AND table IN ('spans', 'trace_totals')"
    )
