"""Schema version 4: when each trace's spans were written, kept in its totals
(`layout.version_partials`), so traces mode pins trees as the other stores do. The cluster DDL
adds the columns before changing the view in place; a store made at version 3 gets them at its
next open, its earlier rows reading as older than any pin, and traces mode lists the traces
written before and after with their whole trees."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.spanrows import complete_row
from observatory_core.storage.clickhouse import ddl
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.clickhouse.layout import NO_ROOT_YET
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.traces.query import list_spans
from tests.helpers import span
from tests.storage.clickhouse.conftest import store_at_version

CLUSTER = ddl.ddl_text("observatory", "obs_cluster")
STATEMENTS = [s.strip() for s in CLUSTER.split(";\n") if s.strip()]
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_cluster_ddl_adds_the_trace_versions_then_changes_the_view_in_place():
    version_4 = [
        s
        for s in STATEMENTS
        if s.startswith("ALTER")
        and ("max_version" in s or "root_version" in s)
        and "retain_days" not in s  # version 6 replaces the view's query again
    ]
    added = [re.match(r"ALTER TABLE (\S+) ON CLUSTER obs_cluster ADD COLUMN", s) for s in version_4]
    assert [m.group(1) for m in added if m] == [
        "observatory.trace_totals_local",
        "observatory.trace_totals_local",
        "observatory.trace_totals",
        "observatory.trace_totals",
    ]
    (view,) = [s for s in version_4 if " MODIFY QUERY " in s]
    assert view.startswith("ALTER TABLE observatory.trace_totals_mv ON CLUSTER obs_cluster")
    assert "FROM observatory.spans_local AS spans" in view
    assert "min(if(spans.parent_span_id IS NULL, spans.version" in view
    assert STATEMENTS.index(view) > max(STATEMENTS.index(s) for s in version_4 if s != view)


def _rows(org: int, trace: str, *children: int, root: bool = True) -> list[dict]:
    """A root (unless not yet) and children, `children` hours before NOW each."""
    out = []
    if root:
        out.append(span(org, 1, NOW - timedelta(hours=3), trace_id=trace, span_id=trace[:16]))
    for i, hours in enumerate(children):
        out.append(
            span(
                org,
                1,
                NOW - timedelta(hours=hours),
                trace_id=trace,
                span_id=f"{i + 1:016x}",
                parent_span_id=trace[:16],
                input_tokens=100 * (i + 1),
            )
        )
    return [complete_row(dict(r), 16_000) for r in out]


def test_a_store_at_version_3_gets_the_trace_versions_at_its_next_open(chdb_session):
    url, store = store_at_version(chdb_session, "version_3", 3)
    org = 7
    done, grown, rootless = "a" * 32, "b" * 32, "c" * 32
    try:
        write_spans(
            store, _rows(org, done, 2) + _rows(org, grown, 2) + _rows(org, rootless, 2, root=False)
        )
        store.close()
        store = open_span_store(url)
        versions = store.client.query(f"SELECT version FROM {store.table('schema_versions')}")
        assert sorted(v for (v,) in versions.result_rows) == [m.version for m in ddl.MIGRATIONS]
        columns = store.client.query(
            f"SELECT name FROM system.columns WHERE database = '{store.database}' "
            "AND table = 'trace_totals'"
        )
        assert {"max_version", "root_version"} <= {n for (n,) in columns.result_rows}
        # the rows written before read 0: older than any pin
        before = store.client.query(
            f"SELECT max(max_version), min(root_version) FROM {store.table('trace_totals')}"
        )
        assert before.result_rows == [(0, 0)]
        # ... but a trace whose root had not arrived reads "no root yet", after every pin
        waiting = store.client.query(
            f"SELECT min(root_version) FROM {store.table('trace_totals')} "
            f"WHERE trace_id = '{rootless}'"
        )
        assert waiting.result_rows == [(NO_ROOT_YET,)]
        scope = Scope(org_id=org, role=Role.ADMIN)
        spec = FilterSpec(relative=None)
        walk = dict(mode="traces", sort="total_tokens", limit=1)
        first = list_spans(store.engine, scope, spec, now=NOW, **walk)
        # after: one trace grows, the rootless one gets its root
        grown_child = _rows(org, grown, 1, 1)[2:]
        write_spans(store, grown_child + _rows(org, rootless)[:1])
        seen, cursor = [r["trace_id"] for r in first.rows], first.next_cursor
        while cursor:  # pinned before the root arrived: the trace stays off this walk
            page = list_spans(store.engine, scope, spec, cursor=cursor, **walk)
            seen += [r["trace_id"] for r in page.rows]
            cursor = page.next_cursor
        assert sorted(seen) == sorted([done, grown])
        for sort in ("start_time", "total_tokens"):
            page = list_spans(store.engine, scope, spec, mode="traces", sort=sort, now=NOW)
            got = {r["trace_id"]: (r["span_count"], r["total_tokens"]) for r in page.rows}
            tokens = [r["total_tokens"] for r in _rows(org, grown, 2, 1)]
            assert got[grown] == (3, sum(tokens)), sort
            assert got[done][0] == 2 and got[rootless][0] == 2, sort
    finally:
        chdb_session.drop(store)
