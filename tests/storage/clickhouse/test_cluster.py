"""A span store on a cluster (`?cluster=NAME`; docs/scale.md, "A cluster"), checked by what the
app's own functions send: no ClickHouse cluster can run here, so a recording client stands in
for the server and answers the few reads, and the engine's own parser (`formatQuery`) reads
every statement the cluster path makes. The same calls on one node send what they sent before
a cluster was possible (the rest of tests/storage/clickhouse runs that path on chDB).

Where chDB accepts a cluster's settings (the write's and the reads'), a store that claims a
cluster runs them on the engine and must answer as one node does."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from observatory_core.__main__ import main
from observatory_core.base.errors import ConfigError, DatabaseUnavailable
from observatory_core.base.settings import get_settings
from observatory_core.storage.clickhouse import connect, ddl
from observatory_core.storage.clickhouse.cluster import Naming
from observatory_core.storage.clickhouse.connect import SpanStore, open_span_store
from observatory_core.storage.clickhouse.org_turns import own_process
from observatory_core.storage.clickhouse.target import parse_target
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import END, demo_rows, written_ago

URL = "clickhouse://writer:pw@ch1.internal:8123/obs?cluster=obs_cluster"
ONE_NODE = "clickhouse://writer:pw@ch1.internal:8123/obs"
ON = "ON CLUSTER obs_cluster"
# some of the server's settings, as the driver reads them at connect (a release since 23.10)
SERVER_SETTINGS = (
    "distributed_foreground_insert",
    "insert_distributed_sync",
    "load_balancing",
    "lightweight_deletes_sync",
)


class Recorder:
    """A clickhouse-connect client that records every statement (kind, text, settings) and
    answers a read with the rows of the first `answers` key found in it (else none); with
    `inner`, it passes each statement on to that client and answers what it answers."""

    def __init__(
        self,
        answers: dict[str, list] | None = None,
        inner: Any = None,
        fail: str | None = None,
        settings: tuple[str, ...] = SERVER_SETTINGS,
        version: str = "25.8.1.1",
    ) -> None:
        self.answers = answers or {}
        self.inner = inner
        self.fail = fail  # the server's error for every command
        self.sent: list[tuple[str, str, dict]] = []
        self.parameters: list[tuple[str, Any]] = []  # each command's text and parameters
        if inner is None:  # what the driver read of the server as it connected
            self.server_settings = dict.fromkeys(settings)
            self.server_version = version

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def query(self, sql: str, parameters: Any = None, settings: dict | None = None, **kw):
        self.sent.append(("query", sql, dict(settings or {})))
        if self.inner is not None:
            return self.inner.query(sql, parameters, settings=settings, **kw)
        rows = next((rows for key, rows in self.answers.items() if key in sql), [])
        return SimpleNamespace(result_rows=rows)

    def command(self, sql: str, parameters: Any = None, settings: dict | None = None, **kw):
        self.sent.append(("command", sql, dict(settings or {})))
        self.parameters.append((sql, parameters))
        if self.fail is not None:
            from clickhouse_connect.driver.exceptions import DatabaseError

            raise DatabaseError(self.fail)
        if self.inner is not None:
            return self.inner.command(sql, parameters, settings=settings, **kw)
        return None

    def insert(self, table: str, data: Any = None, settings: dict | None = None, **kw):
        self.sent.append(("insert", table, dict(settings or {})))
        if self.inner is not None:
            return self.inner.insert(table, data, settings=settings, **kw)
        return None

    def close(self) -> None:
        return None

    def of(self, kind: str) -> list[tuple[str, dict]]:
        return [(text, settings) for k, text, settings in self.sent if k == kind]


def _store(url: str, answers: dict[str, list] | None = None) -> tuple[SpanStore, Recorder]:
    client = Recorder(answers)
    return SpanStore(parse_target(url), client), client


def _parses(chdb_store, sql: str) -> None:
    (formatted,) = chdb_store.client.query(
        "SELECT formatQuery(%(s)s)", parameters={"s": sql}, settings={"max_query_size": 1 << 20}
    ).result_rows[0]
    assert formatted


# -- the setting --------------------------------------------------------------------------------


def test_the_url_names_the_cluster():
    target = parse_target(URL)
    assert (target.host, target.database, target.cluster) == ("ch1.internal", "obs", "obs_cluster")
    assert target.describe() == "clickhouse://writer@ch1.internal:8123/obs?cluster=obs_cluster"
    assert parse_target(ONE_NODE).cluster is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (URL.replace("obs_cluster", "obs-cluster"), "the cluster name 'obs-cluster' must be"),
        ("chdb:///srv/ch?cluster=obs_cluster", "chDB runs on one node"),
    ],
)
def test_a_bad_cluster_says_what_to_write(url, says):
    with pytest.raises(ConfigError) as caught:
        parse_target(url)
    assert says in str(caught.value) and "?cluster=NAME" in str(caught.value)
    assert "pw@" not in str(caught.value)


@pytest.fixture
def cluster_setting(monkeypatch):
    """The setting names the cluster for this test only: the settings read with it are
    forgotten after (a later test's ingest would otherwise dial the cluster's host)."""
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", URL)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_ddl_command_takes_the_settings_cluster(cluster_setting, capsys):
    assert main(["clickhouse-ddl"]) == 0
    assert capsys.readouterr().out == ddl.ddl_text("obs", "obs_cluster")
    assert main(["clickhouse-ddl", "--database", "other"]) == 0
    assert capsys.readouterr().out == ddl.ddl_text("other", "obs_cluster")


# -- migrations at open -------------------------------------------------------------------------


def _server(
    monkeypatch, versions: list[int], spans_engine: str, fail: str | None = None, **server: Any
) -> Recorder:
    """A recorded server whose schema is at `versions`, the one `open_span_store` dials."""
    client = Recorder(
        {
            "SELECT DISTINCT version FROM obs.schema_versions": [(v,) for v in versions],
            "name = 'schema_versions'": [(1 if versions else 0,)],
            "name = 'spans'": [(spans_engine,)],
        },
        fail=fail,
        **server,
    )
    monkeypatch.setattr(connect, "_client", lambda target: client)
    return client


def _open(
    monkeypatch, url: str, versions: list[int], spans_engine: str, fail: str | None = None
) -> Recorder:
    """`open_span_store(url)` against a recorded server whose schema is at `versions`."""
    client = _server(monkeypatch, versions, spans_engine, fail)
    open_span_store(url)
    return client


def test_opening_a_new_cluster_store_applies_every_version_on_the_cluster(monkeypatch):
    """Every statement is the printed cluster DDL's, in its order, sent ON CLUSTER and waiting
    for every node (a node's failure fails the open); each version recorded after its
    statements, once."""
    client = _open(monkeypatch, URL, [], "Distributed")
    sent = [text for text, _ in client.of("command")]
    assert sent == ddl.statements(Naming("obs", "obs_cluster"))
    printed = ddl.ddl_text("obs", "obs_cluster")
    assert all(statement in printed for statement in sent)
    for text, settings in client.of("command"):
        # version 5's fill is an INSERT (no ON CLUSTER): this node's rows from every shard's
        assert ON in text.splitlines()[0] or text.startswith("INSERT INTO obs."), text
        assert settings == {
            "distributed_ddl_output_mode": "throw",
            "distributed_ddl_task_timeout": 50,
        }
    # each version's record right after its last statement, none before
    naming = Naming("obs", "obs_cluster")
    wanted = ["command"] * 2
    for migration in ddl.MIGRATIONS:
        wanted += ["command"] * len(migration.statements(naming)) + ["insert"]
    assert [kind for kind, _, _ in client.sent if kind != "query"] == wanted
    assert {text for text, _ in client.of("insert")} == {"obs.schema_versions"}


def test_a_cluster_store_at_version_2_gets_versions_3_to_9_on_the_cluster(monkeypatch):
    client = _server(monkeypatch, [1, 2], "Distributed")
    # spans in December, January and March (February empty): the partitions of the active parts
    # of every node's spans_local
    client.answers["clusterAllReplicas(obs_cluster, system.parts)"] = [
        ("202512",),
        ("202601",),
        ("202603",),
    ]
    open_span_store(URL)
    naming = Naming("obs", "obs_cluster")
    sent = [text for text, _ in client.of("command")]
    changes = ddl._latency_bins(naming) + ddl._trace_versions(naming) + ddl._actors(naming)
    assert sent[: len(changes)] == changes
    retention = ddl._trace_retention(naming)
    ids = ddl._span_ids(naming)  # version 8 (7 sends nothing: no copies to fold)
    ids += ddl._wrapper_move_journal(naming)  # version 9
    ids += ddl._page_columns_lz4(naming)  # version 10 (metadata: no part rewritten)
    fills = sent[len(changes) : len(sent) - len(retention) - len(ids)]
    assert sent[len(sent) - len(retention) - len(ids) :] == retention + ids
    altered = {text.split()[2] for text in changes + retention if text.startswith("ALTER")}
    # each stored table, the Distributed ones over them, and the views
    assert {"obs.rollup_1min_local", "obs.rollup_1min", "obs.trace_totals_local"} <= altered
    assert "obs.trace_totals_mv" in altered and "obs.spans" not in altered
    assert all(ON in text for text in changes + retention)
    # version 6: the column on the stored and the Distributed trace totals, the TTL on the
    # stored one only, and the view's query replaced
    assert [t.split()[2] for t in retention] == [
        "obs.trace_totals_local",
        "obs.trace_totals",
        "obs.trace_totals_local",
        "obs.trace_totals_mv",
    ]
    assert "MODIFY TTL toDateTime(last_start) + toIntervalDay(retain_days)" in retention[2]
    assert "WHERE retain_days BETWEEN 1 AND 20000" in retention[2]
    assert "max(if(spans.retain_days = 0, toUInt16(65535)" in retention[3]
    # version 5 fills this node's hours from every shard's spans (the Distributed table), one
    # INSERT per month that holds spans (no ON CLUSTER)
    assert len(fills) == 3 and len(set(fills)) == 1
    assert fills[0] == ddl._actors_fill(naming, ddl._MONTH)
    assert fills[0].startswith("INSERT INTO obs.rollup_actors_1hour_local\n")
    assert "FROM obs.spans AS spans" in fills[0] and ON not in fills[0]
    assert "spans.start_time < toDateTime64(%(end)s, 6, 'UTC')" in fills[0]
    months = [params["start"][:7] for text, params in client.parameters if "INSERT" in text]
    assert months == ["2025-12", "2026-01", "2026-03"]
    assert len(client.of("insert")) == len(ddl.MIGRATIONS) - 2  # versions 3 on recorded


def test_a_current_cluster_store_sends_no_schema_change(monkeypatch):
    """Each ON CLUSTER statement waits for every node: a store with nothing to apply sends
    none, so one node down does not stop the app opening the store on the others."""
    client = _open(monkeypatch, URL, [m.version for m in ddl.MIGRATIONS], "Distributed")
    assert client.of("command") == [] and client.of("insert") == []


def test_one_node_opens_as_before(monkeypatch):
    """No cluster: the statements of one node, with no settings of a cluster's."""
    client = _open(monkeypatch, ONE_NODE, [], "ReplacingMergeTree")
    assert [text for text, _ in client.of("command")] == ddl.statements(Naming("obs"))
    assert all(settings == {} for _, settings in client.of("command"))
    assert not any("ON CLUSTER" in text or "_local" in text for _, text, _ in client.sent)


@pytest.mark.parametrize(
    ("url", "engine", "says"),
    [
        (URL, "ReplicatedReplacingMergeTree", "was made for one node"),
        (ONE_NODE, "Distributed", "add ?cluster=NAME"),
    ],
)
def test_a_store_laid_out_for_the_other_setting_is_refused(monkeypatch, url, engine, says):
    """A cluster's database opened as one node would queue its inserts in the background and
    send its re-stamps to a Distributed table; the other way round, mutations to tables that
    do not exist. Refused at open with what to change."""
    with pytest.raises(ConfigError, match=re.escape(says)):
        _open(monkeypatch, url, [m.version for m in ddl.MIGRATIONS], engine)


def test_a_cluster_on_a_server_before_23_10_is_refused_at_open(monkeypatch):
    """Before 23.10 the server knows the writes' `distributed_foreground_insert` only as
    `insert_distributed_sync`, and would refuse every write: refused at open, nothing sent,
    saying the version needed. One node sends no such setting, and opens."""
    old = ("insert_distributed_sync", "load_balancing", "prefer_localhost_replica")
    client = _server(monkeypatch, [], "Distributed", settings=old, version="23.3.8.21")
    with pytest.raises(ConfigError) as caught:
        open_span_store(URL)
    assert str(caught.value) == (
        "The span store on the cluster obs_cluster needs ClickHouse 23.10 or later (the server "
        "answering is version 23.3.8.21: it has no distributed_foreground_insert setting, "
        "which the writes need). Upgrade the cluster (docs/scale.md, 'A cluster')."
    )
    assert client.sent == []
    client = _server(monkeypatch, [], "ReplacingMergeTree", settings=old, version="23.3.8.21")
    open_span_store(ONE_NODE)
    assert [text for text, _ in client.of("command")] == ddl.statements(Naming("obs"))


@pytest.mark.parametrize(
    ("error", "kind", "says"),
    [
        (
            "Code: 701. DB::Exception: Requested cluster 'obs_cluster' not found. "
            "(CLUSTER_DOESNT_EXIST)",
            ConfigError,
            "Check that every node defines the cluster obs_cluster, the {shard} and {replica} "
            "macros and ClickHouse Keeper",
        ),
        (
            "Code: 159. DB::Exception: Distributed DDL task is not finished on 1 of 4 hosts. "
            "(TIMEOUT_EXCEEDED)",
            DatabaseUnavailable,
            "a node did not finish in time or is down; the next open applies it again",
        ),
    ],
)
def test_a_cluster_that_refuses_the_schema_is_said_in_one_sentence(monkeypatch, error, kind, says):
    with pytest.raises(kind) as caught:
        _open(monkeypatch, URL, [], "Distributed", fail=error)
    message = str(caught.value)
    assert message.startswith(
        "The span store's schema was not applied on the cluster obs_cluster (Code: "
    )
    assert says in message and "pw" not in message


@pytest.mark.parametrize(
    ("url", "engine", "says"),
    [
        (URL, "ReplacingMergeTree", "was made for one node"),
        (ONE_NODE, "Distributed", "add ?cluster=NAME"),
    ],
)
def test_a_store_at_version_2_laid_out_for_the_other_setting_is_refused_before_any_change(
    monkeypatch, url, engine, says
):
    """The layout is checked before the missing versions are applied: a one-node store sent
    no `ALTER ... ON CLUSTER`, a cluster's no `MODIFY QUERY ... FROM obs.spans` on its views
    (and no version recorded in its replicated `schema_versions`, which the other nodes
    would then never apply)."""
    client = _server(monkeypatch, [1, 2], engine)
    with pytest.raises(ConfigError, match=re.escape(says)):
        open_span_store(url)
    assert client.of("command") == [] and client.of("insert") == []


def test_the_engines_own_refusals_are_said_in_one_sentence(chdb_store):
    """On chDB, which defines no cluster: a new database for a cluster is refused at its first
    ON CLUSTER statement (the engine's CLUSTER_DOESNT_EXIST, said), and this module's database,
    made for one node, opened as a cluster's is refused by its layout."""
    for database, says in (
        ("t_cluster_new", "was not applied on the cluster obs_cluster (Code: 701."),
        (chdb_store.database, "was made for one node (its spans table is not Distributed)"),
    ):
        target = dataclasses.replace(chdb_store.target, database=database, cluster="obs_cluster")
        with pytest.raises(ConfigError, match=re.escape(says)):
            ddl.apply_schema(SpanStore(target, chdb_store.client))


# -- writes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [URL, ONE_NODE])
def test_writes_store_on_every_shard_before_the_next_batchs_check(url):
    """On a cluster each insert into the Distributed spans returns once every shard has its
    rows, and each check for stored spans goes to the replicas the insert went to; on one node
    neither setting is sent."""
    store, client = _store(url)
    some = demo_rows(200, seed=3)
    rows = [r for r in some if r["org_id"] == some[0]["org_id"]][:30]  # one check per batch
    # a server's store is written under the orgs' turns: without one, refused, nothing sent
    with pytest.raises(ValueError, match="write turns"):
        write_spans(store, rows, batch_size=10)
    assert client.sent == []
    assert len(rows) == 30 and write_spans(store, rows, batch_size=10, turn=own_process) == 30
    steps = [
        (kind, text.split(" FROM ")[-1].split()[0] if kind == "query" else text)
        for kind, text, _ in client.sent
    ]
    cluster = url == URL
    # one node: each batch first reads its orgs' move mutations and whether the store has a
    # journal of wrapper moves (none here: no move taken in); a cluster runs no move yet
    moves = [] if cluster else [("query", "system.mutations"), ("query", "EXISTS")]
    assert steps == [*moves, ("query", "obs.spans"), ("insert", "obs.spans")] * 3
    for kind, text, settings in client.sent:
        if "obs.spans" not in text:
            continue
        if kind == "insert":
            assert settings == (
                {
                    "distributed_foreground_insert": 1,
                    "load_balancing": "in_order",
                    "prefer_localhost_replica": 0,
                }
                if cluster
                else {}
            )
        else:
            same = {"load_balancing": "in_order", "prefer_localhost_replica": 0}
            assert ({k: settings.get(k) for k in same} == same) is cluster
            assert set(settings) - set(same) == {"max_query_size"}


def test_a_cluster_writes_settings_run_on_the_engine_and_count_each_span_once(chdb_session):
    """chDB takes the write's cluster settings (it has no Distributed tables to apply them to):
    a store claiming a cluster writes as one node does, a resend stored once."""
    real = chdb_session.store("cluster_writes")
    client = Recorder(inner=real.client)
    store = SpanStore(dataclasses.replace(real.target, cluster="obs_cluster"), client)
    try:
        rows = demo_rows(300, seed=5)
        keys = {(r["org_id"], r["trace_id"], r["span_id"]) for r in rows}
        first = {(r["org_id"], r["trace_id"], r["span_id"]) for r in rows[:150]}
        assert write_spans(store, rows[:150], batch_size=64) == len(first)
        assert write_spans(store, rows[100:], batch_size=64) == len(keys - first)
        ((count,),) = real.client.query(f"SELECT count() FROM {real.table('spans')}").result_rows
        assert count == len(keys)
        assert all(s.get("distributed_foreground_insert") == 1 for _, s in client.of("insert"))
    finally:
        chdb_session.drop(real)


def test_a_resend_on_a_cluster_leaves_the_views_rows_alone(chdb_session):
    """The gap filler is not done on a cluster (docs/span-store-internals.md, "View gaps"): an
    insert into the Distributed rollups has no sharding key, and a read of a lagging replica would
    top up rows already right. A resend there checks and skips its stored spans, nothing more."""
    real = chdb_session.store("cluster_gaps")
    client = Recorder(inner=real.client)
    store = SpanStore(dataclasses.replace(real.target, cluster="obs_cluster"), client)
    try:
        rows = demo_rows(120, seed=6)
        view = real.table("rollup_1min_mv")
        real.client.command(f"DETACH TABLE {view}")  # the views fail: rows a resend could fill
        try:
            with written_ago():
                assert write_spans(real, rows) == len(rows)
        finally:
            real.client.command(f"ATTACH TABLE {view}")
        assert write_spans(store, rows) == 0
        assert client.of("command") == []
        read = " ".join(text for text, _ in client.of("query"))
        assert "rollup_" not in read and "trace_totals" not in read
    finally:
        chdb_session.drop(real)


# -- reads --------------------------------------------------------------------------------------


def test_reads_on_a_cluster_run_their_subqueries_over_every_shard(chdb_store):
    """The metrics engine's and the hand-written reads carry `distributed_product_mode` on a
    cluster (a subquery over a Distributed table is refused without it), and answer on the
    engine as one node does; on one node they do not carry it."""
    from observatory_core.filters.spec import FilterSpec
    from observatory_core.metrics.engine import run_metrics
    from observatory_core.metrics.query import MetricQuery
    from observatory_core.storage.clickhouse.reads import Window, span_totals
    from tests.helpers import admin_scope

    rows = demo_rows(400, seed=9)
    write_spans(chdb_store, rows)
    org = rows[0]["org_id"]
    client = Recorder(inner=chdb_store.client)
    claimed = SpanStore(dataclasses.replace(chdb_store.target, cluster="obs_cluster"), client)
    spec = FilterSpec(relative=None, start=END - timedelta(days=20), end=END)
    query = MetricQuery(series=("request_count.count",), filters=spec, bucket=None)
    window = Window(END - timedelta(days=20), END)
    try:
        for force in ("raw", "rollup"):
            one = run_metrics(chdb_store.engine, admin_scope(org), query, now=END, force=force)
            got = run_metrics(claimed.engine, admin_scope(org), query, now=END, force=force)
            assert got.frame.equals(one.frame), force
        assert span_totals(claimed, admin_scope(org), window) == span_totals(
            chdb_store, admin_scope(org), window
        )
    finally:
        claimed.engine.dispose()
    # the statements that read the store (not the driver's own `SELECT currentDatabase()`)
    reads = [(t, s) for t, s in client.of("query") if f"{chdb_store.database}." in t]
    assert len(reads) >= 3
    for text, settings in reads:
        assert (
            "distributed_product_mode = 'global'" in text
            or settings.get("distributed_product_mode") == "global"
        ), text
    assert chdb_store.engine.dialect.observatory_cluster is None
