"""Review probe (review17): a fold at open whose deletes are not applied in time fails the open;
each later open finds the same copies (their deletes still queued) and queues them again, so
the unfinished mutations on `spans` grow with every try (fold_copies.py, ddl.py version 7)."""

from __future__ import annotations

import pytest

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.clickhouse import fold_copies as fold_module
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import demo_rows, store_at_version
from tests.storage.clickhouse.test_fold_copies import _copies, _insert

ROWS = demo_rows(60, seed=3, days=2)


def _unfinished(store) -> int:
    ((n,),) = store.client.query(
        "SELECT count() FROM system.mutations WHERE database = %(db)s AND table = 'spans' "
        "AND NOT is_done",
        parameters={"db": store.database},
    ).result_rows
    return int(n)


def test_an_open_tried_again_does_not_queue_the_same_deletes_again(chdb_session, monkeypatch):
    url, store = store_at_version(chdb_session, "fold_retry", 6)
    try:
        assert write_spans(store, ROWS) == len(ROWS)
        _insert(store, [dict(r, status="error") for r in ROWS[:3]], _copies(store)[0])
        # the engine busy: mutations wait (a large table's deletes, or one failing before them)
        store.client.command(f"SYSTEM STOP MERGES {store.table('spans')}")
        monkeypatch.setattr(fold_module, "WAIT_S", 0.5)
        tries = []
        for _ in range(3):  # the app opens again after each failure (current.py, RETRY_S)
            with pytest.raises(DatabaseUnavailable):
                open_span_store(url).close()
            tries.append(_unfinished(store))
        # one fold's deletes queued, however often the open is tried
        assert tries == [1, 1, 1], f"unfinished deletes on spans after each open: {tries}"
    finally:
        store.client.command(f"SYSTEM START MERGES {store.table('spans')}")
        chdb_session.drop(store)


def test_an_open_is_not_failed_by_another_tables_unfinished_mutation(chdb_session, monkeypatch):
    """The fold's own deletes applied; a re-stamp of the trace totals still queued (a large
    org's, or one failing) must not fail the open: `settle` waits for every mutation."""
    url, store = store_at_version(chdb_session, "fold_other", 6)
    totals = store.table("trace_totals")
    try:
        assert write_spans(store, ROWS) == len(ROWS)
        _insert(store, [dict(r, status="error") for r in ROWS[:3]], _copies(store)[0])
        store.client.command(f"SYSTEM STOP MERGES {totals}")
        store.client.command(
            f"ALTER TABLE {totals} UPDATE retain_days = 7 WHERE org_id = 999",
            settings={"mutations_sync": 0},
        )
        monkeypatch.setattr(fold_module, "WAIT_S", 1.0)
        reopened = open_span_store(url)  # raises DatabaseUnavailable before a fix
        reopened.close()
        ((left,),) = store.client.query(
            f"SELECT count() FROM {store.table('spans')} WHERE status = 'error' "
            "AND span_id IN %(ids)s",
            parameters={"ids": [r["span_id"] for r in ROWS[:3]]},
        ).result_rows
        assert left == 3  # the newest copies (status error) stay, the older ones went
    finally:
        store.client.command(f"SYSTEM START MERGES {totals}")
        chdb_session.drop(store)
