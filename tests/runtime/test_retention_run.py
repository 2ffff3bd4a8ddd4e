"""The worker's retention run leaves one audit entry per org it deleted from, with the spans,
traces and rollup rows deleted and the bytes handed back to the disk (runtime/retention.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from observatory_core.accounts.audit import AuditFilter, read_entries
from observatory_core.accounts.retention import set_retention
from observatory_core.runtime.retention import run_and_record
from observatory_core.storage.stores import store_for
from observatory_core.storage.stores.base import month_start
from tests.helpers import admin_scope, make_org, span, write

NOW = datetime(2027, 9, 15, tzinfo=UTC)


def test_a_run_is_in_the_audit_trail_with_rows_and_bytes(engine):
    org, (project,) = make_org(engine, "acme")
    other, (theirs,) = make_org(engine, "globex")
    july = datetime(2027, 7, 5, tzinfo=UTC)
    text = "a long prompt " * 300
    rows = [span(org, project, july + timedelta(minutes=i), input_text=text) for i in range(600)]
    write(engine, rows + [span(other, theirs, NOW - timedelta(days=1))])
    store = store_for(engine)
    with engine.begin() as conn:
        made = store.span_partitions(conn)
        if made is not None and month_start(july) not in {p.start for p in made}:
            store.create_span_partition(conn, july)  # before the clock's months: made here
    set_retention(engine, admin_scope(org), 30, 365)
    set_retention(engine, admin_scope(other), 30, 365)
    result = run_and_record(engine, NOW)
    (entry,) = read_entries(engine, admin_scope(org), AuditFilter(action="retention.run"))
    assert entry["username"] == "retention"
    assert entry["detail"]["spans"] == 600
    assert entry["detail"]["traces"] == 600
    assert entry["detail"]["bytes_reclaimed"] == result.bytes_reclaimed > 1_000_000
    assert entry["detail"]["seconds"] >= 0
    if made is not None:
        assert "spans_p2027_07" in entry["detail"]["partitions_dropped"]
    # nothing deleted in the other org: no entry there
    assert read_entries(engine, admin_scope(other), AuditFilter(action="retention.run")) == []
