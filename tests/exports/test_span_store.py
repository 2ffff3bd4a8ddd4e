"""Exports with OBSERVATORY_SPAN_STORE set: the job lives in DATABASE_URL (SQLite here), its
rows are read from the span store (chDB, its spans copied by migrate-spans). The reference is
polars on the span store's raw rows (every copy, the newest kept per span), so each file must
hold rows only the span store has (a tool call and its twin written there alone, a racing
writer's later copy of a span) and none DATABASE_URL has alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import select

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import fields_hidden_from, visible
from observatory_core.base.settings import get_settings
from observatory_core.exports import job_attempt, job_claims
from observatory_core.exports import worker as worker_module
from observatory_core.exports.jobs import (
    EXPORT_DEFAULT_FIELDS,
    cancel_export,
    create_export,
    get_export,
)
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.clickhouse import current
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import orgs as orgs_table
from observatory_core.storage.schema import spans
from observatory_core.storage.stores.clickhouse import SPAN_ID_SQL
from tests.chdb_store import copy_into_span_store, write_later_copy
from tests.exports.test_worker import FIELDS, SPEC, expected_value, read_back
from tests.helpers import END, load_small_demo, span

KEY = ["org_id", "trace_id", "span_id"]


@pytest.fixture(scope="module")
def routed(tmp_path_factory, chdb_session):
    engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp('exports_ch') / 'app.db'}")
    upgrade(engine)
    load_small_demo(engine, spans_count=1500, days=2, seed=5)
    store = copy_into_span_store(chdb_session, engine, "exports")
    with engine.connect() as conn:
        orgs = dict(conn.execute(select(orgs_table.c.slug, orgs_table.c.id)).all())
        first = (
            conn.execute(
                select(*[c for c in spans.c if c.name != "id"])
                .where(spans.c.org_id == orgs["acme"], spans.c.operation == "chat")
                .order_by(spans.c.start_time)
                .limit(1)
            )
            .mappings()
            .one()
        )
    acme_project = first["project_id"]
    # the span store alone holds these: a tool call, and a twin of it set aside
    tool = span(orgs["acme"], acme_project, END - timedelta(hours=3), operation="execute_tool")
    twin = span(
        orgs["acme"],
        acme_project,
        END - timedelta(hours=3),
        operation="execute_tool",
        duplicate_of=tool["span_id"],
        duplicate_trace_id=tool["trace_id"],
    )
    assert write_spans(store, [tool, twin]) == 2
    # a racing writer's later copy of a stored span, another status and duration: one row, it
    raced = {**dict(first), "status": "error", "duration_ms": 4321.5}
    write_later_copy(store, [raced])  # and folded, as schema version 7 leaves it
    yield {
        "engine": engine,
        "store": store,
        "url": chdb_session.url(store.database),
        "orgs": orgs,
        "extra": {tool["span_id"], twin["span_id"], raced["span_id"]},
        "raced": raced["span_id"],
        "project": acme_project,
    }
    current.close_span_stores()
    engine.dispose()
    chdb_session.drop(store)


@pytest.fixture
def config(tmp_path):
    return WorkerConfig(export_dir=tmp_path / "exports", page_size=200)


def newest_rows(store) -> pl.DataFrame:
    """The span store's raw rows, every copy, read with the client; polars keeps the newest
    copy of each span (its highest version)."""
    result = store.client.query(
        f"SELECT *, {SPAN_ID_SQL.format(t='')} AS id FROM {store.table('spans')}"
    )
    frame = pl.DataFrame(
        result.result_rows, schema=result.column_names, orient="row", infer_schema_length=None
    )
    return frame.sort("version", descending=True).unique(KEY, keep="first")


def expected_rows(store, org_id: int, operations=None) -> list[dict]:
    frame = newest_rows(store).filter(pl.col("org_id") == org_id)
    if operations:
        frame = frame.filter(pl.col("operation").is_in(list(operations)))
    rows = frame.sort(["start_time", "id"]).to_dicts()
    for row in rows:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
        for name, value in row.items():  # the client's times are naive UTC
            if isinstance(value, datetime) and value.tzinfo is None:
                row[name] = value.replace(tzinfo=UTC)
    return rows


def run(routed, scope, config, **kwargs) -> tuple[dict, list[dict]]:
    engine = routed["engine"]
    job = create_export(engine, scope, kwargs.pop("spec", SPEC), **kwargs)
    assert work_once(engine, config) == "completed"
    job = get_export(engine, scope, job["id"])
    fmt, compression = kwargs.get("fmt", "csv"), kwargs.get("compression", "none")
    return job, read_back(config.export_dir / job["file_name"], fmt, compression)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_each_format_holds_the_span_stores_rows(on_store, config, fmt):
    acme = on_store["orgs"]["acme"]
    scope = Scope(org_id=acme, role=Role.DEVELOPER, username="dana")
    job, got = run(on_store, scope, config, fmt=fmt, compression="none", fields=FIELDS)
    expected = expected_rows(on_store["store"], acme, SPEC.operations)
    assert len(expected) > 300 and job["rows_written"] == len(got) == len(expected)
    assert (job["progress"], job["error_message"]) == (1.0, None)
    for want, have in zip(expected, got, strict=True):
        assert {f: expected_value(want[f], f, fmt) for f in FIELDS} == {f: have[f] for f in FIELDS}
    exported = {row["span_id"] for row in got}
    assert on_store["extra"] <= exported  # read from the span store, not DATABASE_URL
    assert [r["status"] for r in got if r["span_id"] == on_store["raced"]] == [
        expected_value("error", "status", fmt)
    ]  # the racing copy: once, as its newest copy


def test_a_role_exports_its_visible_fields_and_its_org_only(on_store, config):
    """Billing's default columns leave prompt text out; globex's file holds globex's spans."""
    orgs = on_store["orgs"]
    globex = Scope(org_id=orgs["globex"], role=Role.BILLING, username="bill")
    job, got = run(on_store, globex, config, fmt="jsonl", spec=FilterSpec(relative=None))
    assert list(got[0]) == job["fields"] == list(visible(globex, EXPORT_DEFAULT_FIELDS))
    assert not fields_hidden_from(Role.BILLING) & set(got[0])
    expected = expected_rows(on_store["store"], orgs["globex"])
    assert [r["span_id"] for r in got] == [r["span_id"] for r in expected]
    assert not on_store["extra"] & {r["span_id"] for r in got}
    # the twin set aside is exported, naming the span that counts (as on the other stores)
    acme = Scope(org_id=orgs["acme"], role=Role.BILLING, username="bill")
    _, acme_rows = run(on_store, acme, config, fmt="jsonl", spec=FilterSpec(relative=None))
    twins = [r for r in acme_rows if r["span_id"] in on_store["extra"] and r["duplicate_of"]]
    assert len(twins) == 1 and twins[0]["duplicate_of"] in on_store["extra"]


def test_spans_written_after_the_job_was_made_stay_out(on_store, config):
    acme = on_store["orgs"]["acme"]
    scope = Scope(org_id=acme, role=Role.DEVELOPER, username="dana")
    engine, store = on_store["engine"], on_store["store"]
    job = create_export(engine, scope, FilterSpec(relative=None), fmt="jsonl")
    late = span(acme, on_store["project"], END - timedelta(hours=2), operation="chat")
    assert write_spans(store, [late]) == 1
    try:
        assert work_once(engine, config) == "completed"
        done = get_export(engine, scope, job["id"])
        got = read_back(config.export_dir / done["file_name"], "jsonl", "none")
        assert late["span_id"] not in {r["span_id"] for r in got}
        assert done["rows_written"] == len(expected_rows(store, acme)) - 1
    finally:
        store.client.command(
            f"DELETE FROM {store.table('spans')} WHERE span_id = {{s:String}}",
            parameters={"s": late["span_id"]},
        )


def test_cancel_stops_within_one_page(on_store, config, monkeypatch):
    acme = on_store["orgs"]["acme"]
    scope = Scope(org_id=acme, role=Role.DEVELOPER, username="dana")
    engine = on_store["engine"]
    job = create_export(engine, scope, FilterSpec(relative=None), fmt="parquet")
    pages, real = [], job_attempt.still_mine

    def cancel_after_first_page(engine_, job_id, cfg, progress, rows):
        pages.append((rows, progress))
        if len(pages) == 1:
            cancel_export(engine_, scope, job_id)
        return real(engine_, job_id, cfg, progress, rows)

    monkeypatch.setattr(job_attempt, "still_mine", cancel_after_first_page)
    assert work_once(engine, config) == "cancelled"
    # progress counts against the org's stored copies (at least its spans: an estimate, the
    # span store's windows number the copies, docs/scale.md), the rows written exactly
    store = on_store["store"]
    copies = store.client.query(
        f"SELECT count() FROM {store.table('spans')} WHERE org_id = {{o:Int64}}",
        parameters={"o": acme},
    ).result_rows[0][0]
    assert copies >= len(expected_rows(store, acme))
    assert pages == [(config.page_size, config.page_size / copies)]
    assert get_export(engine, scope, job["id"])["status"] == "cancelled"
    assert list(config.export_dir.iterdir()) == []


def test_a_span_store_that_is_down_fails_the_job_with_a_sentence(routed, config, monkeypatch):
    """Unreachable: each attempt is retried, then the job fails with one sentence naming the
    span store; no traceback in the job or the log."""
    url = "clickhouse://user:secret@127.0.0.1:1/observatory"
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", url)
    get_settings.cache_clear()
    monkeypatch.setattr(worker_module, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.setattr(current, "RETRY_S", 0.0)
    scope = Scope(org_id=routed["orgs"]["acme"], role=Role.DEVELOPER, username="dana")
    try:
        job = create_export(routed["engine"], scope, FilterSpec(relative=None))
        assert work_once(routed["engine"], config) == "failed"
    finally:
        get_settings.cache_clear()
    failed = get_export(routed["engine"], scope, job["id"])
    assert failed["attempts"] == job_claims.MAX_ATTEMPTS
    message = failed["error_message"]
    assert message.startswith("The span store failed the export's last of 5 attempts (")
    assert "Cannot reach the ClickHouse span store at clickhouse://user@127.0.0.1:1" in message
    assert message.endswith("; start it again once the span store is healthy.")
    assert "secret" not in message and "Traceback" not in message


def test_a_span_store_failing_mid_export_is_retried(on_store, config, monkeypatch):
    """The engine's connection error on the first read, after the windows (the driver's OperationalError): a
    transient failure, so the job starts over and completes."""
    from clickhouse_connect.driver.exceptions import OperationalError

    monkeypatch.setattr(worker_module, "RETRY_BACKOFF_S", 0.01)
    acme = on_store["orgs"]["acme"]
    scope = Scope(org_id=acme, role=Role.DEVELOPER, username="dana")
    store = on_store["store"]
    real, calls = store.client.query, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the windows (which count the job), then this: the first read
            raise OperationalError("Error HTTPConnectionPool: connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(store.client, "query", flaky)
    job, got = run(on_store, scope, config, fmt="csv", spec=FilterSpec(relative=None))
    assert len(calls) > 2 and job["attempts"] == 2
    assert len(got) == job["rows_written"] == len(expected_rows(store, acme))
