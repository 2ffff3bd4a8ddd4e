"""Retention on the span store: `migrate-spans` stamps each copied span's `retain_days` as
ingest would (the project's own days, else the org's, else 0) and leaves out what is already
past them; a retention change, from the command line or the Admin page's path, re-stamps the
org's stored spans (a project's own days kept on an org change), and the table's TTL then
deletes what the new settings expire; a span store that fails leaves the setting saved, says
so, and the worker's retention run re-stamps afterwards.

Expected days and kept spans are worked out here from the settings the test makes, not with
the code under test. `DATABASE_URL` (the settings, and migrate-spans' source) is SQLite and
PostgreSQL; its settings and spans are made once per kind, and each test copies them."""

from __future__ import annotations

import sqlite3
import time
import uuid
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from observatory_core.__main__ import main
from observatory_core.accounts.retention import (
    Retention,
    get_retention,
    org_stamp,
    set_retention,
)
from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.base.settings import get_settings
from observatory_core.ingest import to_clickhouse
from observatory_core.runtime.retention import restamp_span_store
from observatory_core.storage.clickhouse import current, restamp
from observatory_core.storage.clickhouse import migrate_spans as mig
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.conftest import PG_ADMIN_URL, pg_admin
from tests.helpers import admin_scope, make_org, span, write

AGES = (1, 3, 8, 15, 45, 120)  # days before now each project's spans started
PER_AGE = 3


@contextmanager
def _database(kind: str, path):
    """An empty database of `kind` (SQLite under `path`, else one of its own on PostgreSQL)."""
    if kind == "sqlite":
        yield f"sqlite:///{path}"
        return
    name = f"obs_stamps_{uuid.uuid4().hex[:10]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _source(url: str) -> dict:
    """A `DATABASE_URL` with three orgs: alpha keeps spans 30 days and its project `own` 7,
    beta 90, gamma forever; PER_AGE spans per project at each of AGES."""
    engine = get_engine(url)
    upgrade(engine)
    alpha, (a_main, a_own) = make_org(engine, "alpha", projects=("main", "own"))
    beta, (b_main,) = make_org(engine, "beta")
    gamma, (g_main,) = make_org(engine, "gamma")
    set_retention(engine, admin_scope(alpha), 30, None, {a_own: 7})
    set_retention(engine, admin_scope(beta), 90, None, {})
    now = datetime.now(UTC)
    rows = [
        span(org, project, now - timedelta(days=age, minutes=i))
        for org, project in ((alpha, a_main), (alpha, a_own), (beta, b_main), (gamma, g_main))
        for age in AGES
        for i in range(PER_AGE)
    ]
    write(engine, rows)
    ages = {r["span_id"]: (r["org_id"], r["project_id"], (now - r["start_time"])) for r in rows}
    days = {(alpha, a_main): 30, (alpha, a_own): 7, (beta, b_main): 90, (gamma, g_main): 0}
    return {
        "url": url,
        "rows": rows,
        "engine": engine,
        "ids": {"alpha": alpha, "beta": beta, "gamma": gamma, "own": a_own, "a_main": a_main},
        "spans": ages,
        "days": days,
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def made(request, tmp_path_factory):
    """The source (`_source`) made once per kind, its engine closed so that it can be copied:
    (kind, url, source)."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_url")  # fails loudly, with the fix, if PostgreSQL is down
    with _database(request.param, tmp_path_factory.mktemp("stamps") / "made.db") as url:
        source = _source(url)
        source["engine"].dispose()
        yield request.param, url, source


@contextmanager
def _copy_of(made, path):
    """A copy of the made source in a database of its own (a file beside `path`, or a
    PostgreSQL database made from it as a template), with an engine of its own."""
    kind, url, source = made
    if kind == "sqlite":
        copy = f"sqlite:///{path}"
        # sqlite3's `with` commits but never closes: closing() does
        with (
            closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as old,
            closing(sqlite3.connect(path)) as new,
        ):
            old.backup(new)
        yield {**source, "url": copy, "engine": get_engine(copy)}
        return
    name = f"obs_stamps_{uuid.uuid4().hex[:10]}"
    pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{url.rsplit("/", 1)[1]}"')
    copy = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(copy)
    try:
        yield {**source, "url": copy, "engine": engine}
    finally:
        engine.dispose()
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _kept(spans: dict, days: dict) -> set[str]:
    """The spans `days` keep: started less than their project's days ago, or days 0."""
    return {
        sid
        for sid, (org, project, age) in spans.items()
        if not days[(org, project)] or age < timedelta(days=days[(org, project)])
    }


def _stored(store) -> dict[str, int]:
    """span id -> retain_days, after the table's TTL ran (forced, as only a test does)."""
    store.client.command(f"OPTIMIZE TABLE {store.table('spans')} FINAL")
    rows = store.client.query(
        f"SELECT span_id, retain_days FROM {store.table('spans')} LIMIT 1 BY trace_id, span_id"
    ).result_rows
    return {sid: int(d) for sid, d in rows}


def _expected(source: dict, days: dict, kept: set[str]) -> dict[str, int]:
    return {
        sid: days[(org, project)]
        for sid, (org, project, _) in source["spans"].items()
        if sid in kept
    }


# -- migrate-spans ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def copied(made, tmp_path_factory, chdb_session):
    with _copy_of(made, tmp_path_factory.mktemp("stamps") / "copy.db") as source:
        store = chdb_session.store("stamps_copy")
        report = mig.migrate_spans(
            source["engine"], store, org_ids=list(mig.source_orgs(source["engine"]))
        )
        yield source, store, report
        chdb_session.drop(store)
        source["engine"].dispose()


def test_migrate_spans_stamps_each_span_as_ingest_would(copied):
    source, store, report = copied
    kept = _kept(source["spans"], source["days"])
    assert _stored(store) == _expected(source, source["days"], kept)
    # alpha/main: 45 and 120 days past 30; alpha/own: 8 and more past 7; beta: 120 past 90
    assert report.expired == len(source["spans"]) - len(kept) == PER_AGE * (2 + 4 + 1)
    assert report.copied == len(kept)


def test_the_copy_stamps_what_ingest_stamps(copied, chdb_session):
    source, store, _ = copied
    ingested = chdb_session.store("stamps_ingest")
    try:
        to_clickhouse.forget_settings()  # ingest reads the orgs' settings at most once a minute
        to_clickhouse.write_spans(ingested, source["engine"], source["rows"])
        assert _stored(ingested) == _stored(store)
    finally:
        chdb_session.drop(ingested)


def test_check_compares_the_spans_within_their_retention(copied):
    source, store, _ = copied
    checks = mig.check(source["engine"], store, mig.source_orgs(source["engine"]))
    assert [c.ok for c in checks] == [True, True, True]
    gamma = next(c for c in checks if c.slug == "gamma")
    assert gamma.source.spans == gamma.target.spans == PER_AGE * len(AGES)


def test_a_second_run_copies_nothing_and_counts_nothing_expired_twice(copied):
    source, store, _ = copied
    again = mig.migrate_spans(
        source["engine"], store, org_ids=list(mig.source_orgs(source["engine"])), from_start=True
    )
    kept = _kept(source["spans"], source["days"])
    assert (again.copied, again.skipped) == (0, len(kept))


# -- a retention change ---------------------------------------------------------------------------


@pytest.fixture
def live(made, tmp_path, chdb_session, monkeypatch):
    """A deployment on the span store: DATABASE_URL the source, its spans copied, and the
    process's span store (`current.span_store()`) the test's."""
    with _copy_of(made, tmp_path / "live.db") as source:
        yield from _live(source, chdb_session, monkeypatch, tmp_path)


def _live(source, chdb_session, monkeypatch, tmp_path):
    url = source["url"]
    store = chdb_session.store("stamps_live")
    mig.migrate_spans(source["engine"], store, org_ids=list(mig.source_orgs(source["engine"])))
    store_url = chdb_session.url(store.database)
    with monkeypatch.context() as m:
        m.setenv("DATABASE_URL", url)
        m.setenv("OBSERVATORY_SPAN_STORE", store_url)
        m.setattr("observatory_core.base.settings.SECRETS_FILE", tmp_path / "secrets.toml")
        get_settings.cache_clear()
        m.setitem(current._OPEN, store_url, store)
        yield source, store
    get_settings.cache_clear()
    chdb_session.drop(store)
    source["engine"].dispose()


def test_a_change_re_stamps_the_stored_spans_and_the_ttl_follows(live, capsys):
    source, store = live
    ids, days = source["ids"], dict(source["days"])
    alpha, own, a_main = ids["alpha"], ids["own"], ids["a_main"]
    kept = _kept(source["spans"], days)
    assert _stored(store) == _expected(source, days, kept)

    # the command line: alpha's spans 10 days; its project `own` keeps its own 7
    assert main(["retention", "set", "--org", "alpha", "--spans-days", "10"]) == 0
    assert "spans in the span store re-stamped" in capsys.readouterr().out
    days[(alpha, a_main)] = 10
    kept &= _kept(source["spans"], days)
    assert _stored(store) == _expected(source, days, kept)

    # the Admin page's path (no wait: the engine finishes it): `own` down to 2 days
    engine = source["engine"]
    saved = set_retention(engine, admin_scope(alpha), 10, None, {own: 2})
    assert saved.changed and "in the background" in saved.span_store
    assert restamp.settle(store, timeout_s=60)
    days[(alpha, own)] = 2
    kept &= _kept(source["spans"], days)
    assert _stored(store) == _expected(source, days, kept)

    # alpha back to forever: its main project's spans are kept, `own` keeps its 2 days
    assert set_retention(engine, admin_scope(alpha), None, None, {own: 2})
    assert restamp.settle(store, timeout_s=60)
    days[(alpha, a_main)] = 0
    assert _stored(store) == _expected(source, days, kept)
    # a project dropping its own days falls back to the org's (forever): nothing deleted
    assert set_retention(engine, admin_scope(alpha), None, None, {own: None})
    assert restamp.settle(store, timeout_s=60)
    days[(alpha, own)] = 0
    assert _stored(store) == _expected(source, days, kept)
    assert get_retention(engine, admin_scope(alpha)) == Retention(None, None, {})

    # a hundred years, the most the settings take: the TTL (a DateTime, ending in 2106) cannot
    # hold it, so the spans are stamped 0 and kept, not wrapped round to a past date and deleted
    stored = set(_stored(store))
    assert main(["retention", "set", "--org", "beta", "--spans-days", "36500"]) == 0
    assert restamp.settle(store, timeout_s=60)
    days[(ids["beta"], next(p for o, p in days if o == ids["beta"]))] = 0
    assert set(_stored(store)) == stored
    assert _stored(store) == _expected(source, days, kept)


def test_a_failing_span_store_keeps_the_setting_and_the_worker_re_stamps(live, capsys, monkeypatch):
    source, store = live
    ids, days = source["ids"], dict(source["days"])
    engine, beta = source["engine"], ids["beta"]
    before = _stored(store)

    def held(*_):
        raise DatabaseUnavailable("The chDB folder is held by another process.")

    with monkeypatch.context() as m:
        m.setattr(current, "span_store", held)
        assert main(["retention", "set", "--org", "beta", "--spans-days", "20"]) == 0
        out = capsys.readouterr()
        assert "keep their old retention" in out.err and "Traceback" not in out.err
        assert "worker's next retention run" in out.err
        assert get_retention(engine, admin_scope(beta)).span_days == 20  # saved all the same
        assert _stored(store) == before  # not re-stamped yet
        said = restamp_span_store(engine)
        assert said.failed and "held by another process" in said.said

    # the engine refusing the statement itself (a lost connection) is said the same way
    from clickhouse_connect.driver.exceptions import OperationalError

    def refused(*_, **__):
        raise OperationalError("Code: 210. Connection refused")

    with monkeypatch.context() as m:
        m.setattr(store.client, "command", refused, raising=False)
        saved = set_retention(engine, admin_scope(beta), 25, None, {})
    assert saved.changed and saved.span_store_failed and "Connection refused" in saved.span_store
    assert _stored(store) == before

    # a retention run (the worker's, here `retention run`) finds beta's stamps stale and
    # re-stamps them; the next finds nothing
    capsys.readouterr()
    assert main(["retention", "run"]) == 0
    stale = [s for s in _kept(source["spans"], source["days"]) if source["spans"][s][0] == beta]
    assert f"Re-stamping {len(stale)} stored spans of 1 org(s)" in capsys.readouterr().out
    assert restamp.settle(store, timeout_s=60)
    days[(beta, next(p for o, p in days if o == beta))] = 25
    kept = _kept(source["spans"], source["days"]) & _kept(source["spans"], days)
    assert _stored(store) == _expected(source, days, kept)
    assert restamp_span_store(engine).said is None


def test_a_re_stamp_read_before_a_change_stamps_the_changed_days(live):
    """The worker's run read the settings (beta: 90 days), then an admin set 365: its
    re-stamp takes beta's row and reads the days again, so it stamps 365, not the 90 read
    before, whose TTL would have deleted spans the change keeps."""
    source, store = live
    engine, beta = source["engine"], source["ids"]["beta"]
    days = dict(source["days"])
    read_before = restamp.Stamp(beta, 7)  # stale against what is stored: beta gets a mutation
    assert set_retention(engine, admin_scope(beta), 365, None, {})
    assert restamp.settle(store, timeout_s=60)
    found = restamp.reconcile(store, [read_before], partial(org_stamp, engine))
    assert found and beta in found.spans
    assert restamp.settle(store, timeout_s=60)
    days[(beta, next(p for o, p in days if o == beta))] = 365
    assert _stored(store) == _expected(source, days, _kept(source["spans"], source["days"]))


def test_a_failing_mutation_is_said_not_waited_on_forever(live):
    source, store = live
    store.client.command(
        f"ALTER TABLE {store.table('spans')} UPDATE retain_days = "
        "toUInt16(throwIf(retain_days >= 0, 'boom') + 3) WHERE 1",
        settings={"mutations_sync": 0},
    )
    try:
        for _ in range(200):  # the engine tries it in the background
            if restamp.failing(store):
                break
            time.sleep(0.05)
        said = restamp_span_store(source["engine"])
        assert said.failed and "keeps failing" in said.said and "boom" in said.said
    finally:
        store.client.command(f"KILL MUTATION WHERE database = '{store.database}' SYNC")
    assert restamp.settle(store, timeout_s=60)
