"""Review of `span_expiry.py` (commit 7a7f7c8) on a cluster and when a statement fails midway,
checked by what it sends to a recording client (no cluster can run here: `test_cluster.py`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.clickhouse.span_expiry import expire_spans
from tests.storage.clickhouse.test_cluster import ONE_NODE, URL, Recorder, _parses, _store

NOW = datetime(2026, 12, 7, tzinfo=UTC)
ANSWERS = {
    "SELECT count() FROM": [(0,)],  # no unfinished mutation, on any node
    "countIf(every)": [(1, 3)],  # the whole traces
    "FROM obs.spans WHERE": [(1, 12)],
    "FROM obs.trace_totals WHERE": [(1, 4)],
}


def test_the_whole_traces_read_on_a_cluster_runs_its_subquery_over_every_shard(chdb_store):
    """On a cluster `store.table('trace_totals')` is the Distributed table, and a read of it whose
    IN holds a subquery over it again is refused by the server unless
    `distributed_product_mode` says how (`cluster.READ_SETTINGS`; the reads carry it:
    `test_reads_on_a_cluster_run_their_subqueries_over_every_shard`)."""
    store, client = _store(URL, ANSWERS)
    told: list[dict] = []
    expire_spans(store, NOW, told.append)
    assert [{o: (e.spans, e.traces, e.trace_rows) for o, e in t.items()} for t in told] == [
        {1: (12, 0, 0)},
        {1: (0, 3, 4)},
    ]
    (whole,) = [(t, s) for t, s in client.of("query") if "countIf(every)" in t]
    text, settings = whole
    _parses(chdb_store, text)
    assert "IN (SELECT org_id, trace_id FROM obs.trace_totals " in text  # Distributed in IN
    assert settings.get("distributed_product_mode") == "global" or "GLOBAL IN" in text


class _FailsOn(Recorder):
    """A recording client whose reads containing `failing` raise as the server would."""

    def __init__(self, answers, failing: str) -> None:
        super().__init__(answers)
        self.failing = failing

    def query(self, sql, parameters=None, settings=None, **kw):
        if self.failing in sql:
            from clickhouse_connect.driver.exceptions import DatabaseError

            self.sent.append(("query", sql, dict(settings or {})))
            raise DatabaseError("Code: 288. Double-distributed IN/JOIN subqueries is denied")
        return super().query(sql, parameters, settings=settings, **kw)


@pytest.mark.parametrize("url", [URL, ONE_NODE])
def test_a_failure_after_the_spans_delete_does_not_lose_its_count(url):
    """The spans' DELETE is sent before the trace totals are read; when that read fails the
    run raises, the spans go all the same (the engine applies the DELETE), and their count
    never reaches the org's audit trail (`runtime/retention._spans` gets no answer), nor can a
    later run count them again. Either nothing is deleted before every count is read, or the
    counts of what was sent are kept."""
    from observatory_core.storage.clickhouse.connect import SpanStore
    from observatory_core.storage.clickhouse.target import parse_target

    client = _FailsOn(ANSWERS, "countIf(every)")
    store = SpanStore(parse_target(url), client)
    told: list[dict] = []
    with pytest.raises(DatabaseUnavailable):
        expire_spans(store, NOW, told.append)
    deletes = [t for t, _ in client.of("command") if t.startswith("DELETE FROM obs.spans")]
    assert deletes == [] and told == [], "the spans' DELETE was sent and its count dropped"


class _DeleteFailsOn(Recorder):
    """A recording client whose DELETE of `table` raises as a server that refuses it would."""

    def __init__(self, answers, table: str) -> None:
        super().__init__(answers)
        self.table = table

    def command(self, sql, *args, **kw):
        if sql.startswith(f"DELETE FROM obs.{self.table}"):
            from clickhouse_connect.driver.exceptions import DatabaseError

            raise DatabaseError("Code: 999. refused")
        return super().command(sql, *args, **kw)


@pytest.mark.parametrize("url", [URL, ONE_NODE])
def test_a_trace_totals_delete_refused_after_the_spans_one_keeps_the_spans_count(url):
    """The spans' DELETE went: their count is told before the trace totals' DELETE is sent,
    so a refusal of that one (the run raises) still leaves the spans in the org's trail."""
    from observatory_core.storage.clickhouse.connect import SpanStore
    from observatory_core.storage.clickhouse.target import parse_target

    store = SpanStore(parse_target(url), _DeleteFailsOn(ANSWERS, "trace_totals"))
    told: list[dict] = []
    with pytest.raises(DatabaseUnavailable):
        expire_spans(store, NOW, told.append)
    assert [{o: e.spans for o, e in t.items()} for t in told] == [{1: 12}]


def test_no_span_is_deleted_by_stamps_the_run_did_not_reconcile(tmp_path, monkeypatch):
    """The run holds back the re-stamp while any mutation of the spans or trace totals is
    unfinished (here the last run's delete of trace totals), and the stamps it would have
    corrected are the ones the spans' delete then judges by: an org whose admin lengthened
    its retention while the store was unreachable (`set_retention` could send no re-stamp)
    still has spans stamped with the old, shorter days. The spans' delete must wait for a run
    whose re-stamp found nothing stale, as it waits on an unfinished re-stamp."""
    from observatory_core.base.settings import get_settings
    from observatory_core.runtime.retention import restamp_span_store
    from observatory_core.storage.clickhouse import current
    from observatory_core.storage.engine import get_engine
    from observatory_core.storage.migrate import upgrade
    from tests.helpers import make_org

    engine = get_engine(f"sqlite:///{tmp_path / 'settings.db'}")
    upgrade(engine)
    org, _ = make_org(engine, "alpha")  # keeps its spans forever now
    store, client = _store(
        ONE_NODE,
        {
            "latest_fail_reason != ''": [],
            "table IN ('spans', 'trace_totals') AND NOT is_done": [(1,)],
            "table IN ('trace_totals') AND NOT is_done": [(1,)],
            "AND NOT is_done": [(0,)],
            # spans still stamped 7 days, from before the admin's change
            "FROM obs.spans WHERE retain_days BETWEEN": [(org, 12)],
        },
    )
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", ONE_NODE)
    get_settings.cache_clear()
    monkeypatch.setitem(current._OPEN, ONE_NODE, store)
    try:
        said = restamp_span_store(engine, now=NOW)
    finally:
        get_settings.cache_clear()
    assert "An earlier re-stamp is still running" in (said.said or "")
    deletes = [t for t, _ in client.of("command") if t.startswith("DELETE FROM obs.spans")]
    assert deletes == [], said.said
