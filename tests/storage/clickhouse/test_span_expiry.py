"""The worker's retention run on the span store deletes the spans and trace totals past their
stamped retention itself (`span_expiry.py`), not only through the tables' TTLs, and writes
what each org lost there into its audit trail as the other stores' runs do: spans, whole
traces and rollup rows, one entry per org that lost any. `DATABASE_URL` (settings and the
trail) is SQLite and PostgreSQL; the expected counts come from polars over the rows written.

The spans are stamped by ingest and the run is told a "now" ten days on: the engine's TTL, on
the real clock, has nothing to delete yet, so every row that goes is the run's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import sqlalchemy as sa

from observatory_core.base.settings import get_settings
from observatory_core.ingest.to_clickhouse import forget_settings, write_spans
from observatory_core.runtime.retention import restamp_span_store
from observatory_core.storage.schema import audit_log
from tests.storage.clickhouse.test_derived_retention import (
    _frame,
    _kept_spans,
    _mutations_done,
    _rows,
    _settings,
    _use,
    made,  # noqa: F401  (the fixture: the orgs on SQLite and PostgreSQL, made once)
)
from tests.storage.clickhouse.test_retention_stamps import _copy_of

KEY = ["org", "project", "trace"]


def _trail(engine) -> list[tuple[int, dict]]:
    """The span store's retention entries, oldest first: (org, counts)."""
    a = audit_log.c
    query = (
        sa.select(a.org_id, a.detail)
        .where(a.action == "retention.run", a.subject == "span store")
        .order_by(a.id)
    )
    with engine.connect() as conn:
        return [(int(o), d) for o, d in conn.execute(query)]


def _by_org(frame: pl.DataFrame) -> dict[int, int]:
    return dict(frame.group_by("org").len().iter_rows())


def test_the_run_deletes_expired_spans_and_writes_each_orgs_loss(
    made,  # noqa: F811
    tmp_path,
    chdb_session,
    monkeypatch,
):
    now = datetime.now(UTC)
    later = now + timedelta(days=10)  # the run's "now"
    store = chdb_session.store("span_expiry")
    with _copy_of(made, tmp_path / "expiry.db") as source:
        try:
            _use(store, chdb_session.url(store.database), monkeypatch)
            engine, ids = source["engine"], source["ids"]  # alpha (main, own), beta, gamma
            alpha, a_main, a_own = ids["alpha"], ids["a_main"], ids["own"]
            beta, b_main = ids["beta"], ids["b_main"]
            # alpha: spans 30 days, its project `own` 7, rollups 60; beta: spans 50, rollups 55; gamma kept
            _settings(engine, **{str(alpha): (30, 60, {a_own: 7}), str(beta): (50, 55, {})})
            forget_settings()
            rows = _rows(ids, now)
            days = {(alpha, a_main): 30, (alpha, a_own): 7, (beta, b_main): 50}
            stored = _kept_spans(_frame(rows), days, now)  # ingest writes none already past
            assert write_spans(store, engine, [dict(r) for r in rows]) == stored.height

            said = restamp_span_store(engine, now=later)  # the worker's retention run
            _mutations_done(store)
            kept = _kept_spans(stored, days, later)
            gone = stored.join(kept, on=[*KEY, "start"], how="anti")
            whole = stored.select(KEY).unique().join(kept.select(KEY).unique(), on=KEY, how="anti")
            assert set(_by_org(gone)) == {alpha, beta}  # gamma keeps everything
            assert f"Deleting {gone.height:,} spans and {whole.height:,} traces" in said.said
            trail = dict(_trail(engine))
            assert set(trail) == {alpha, beta}
            for org in (alpha, beta):
                assert trail[org]["spans"] == _by_org(gone)[org], org
                assert trail[org]["traces"] == _by_org(whole)[org], org
            assert trail[beta]["rollup_rows"] > 0 and trail[alpha]["rollup_rows"] == 0

            # what is left is what polars keeps (read through the engine's delete mask)
            left = store.client.query(
                f"SELECT org_id, count() FROM {store.table('spans')} GROUP BY org_id"
            ).result_rows
            assert dict(left) == _by_org(kept)
            traces = store.client.query(
                f"SELECT DISTINCT org_id, project_id, trace_id FROM {store.table('trace_totals')}"
            ).result_rows
            assert {tuple(r) for r in traces} == set(kept.select(KEY).unique().iter_rows())

            # the next run finds nothing more and writes no entry
            assert restamp_span_store(engine, now=later).said is None
            assert len(_trail(engine)) == 2
        finally:
            forget_settings()
            get_settings.cache_clear()
            chdb_session.drop(store)
