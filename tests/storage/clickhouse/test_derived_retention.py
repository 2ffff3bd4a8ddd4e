"""Retention of the span store's derived tables: the rollups and the hours' users and sessions
kept for the org's rollup retention (a bucket that started before now less the days goes, as
`storage/retention._expire_rollups` does on the other stores; none set: kept), and the trace
totals gone with the spans they count (schema version 6), so the trace count a user reads
from them matches the spans left. A setting change, and a store written at version 5 opened
at 6. `DATABASE_URL` (the settings) is SQLite and PostgreSQL.

Expected rows are worked out with polars from the rows written and the settings the test
makes, not with the code under test. The orgs are made once per kind, each test writing on a
copy of them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.retention import set_retention
from observatory_core.accounts.scope import Scope
from observatory_core.base.settings import get_settings
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.runtime.retention import restamp_span_store
from observatory_core.storage.clickhouse import current, ddl, restamp
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.helpers import child_of, make_org, span
from tests.storage.clickhouse.conftest import store_at_version
from tests.storage.clickhouse.test_retention_stamps import _copy_of, _database

AGES = (1, 3, 8, 15, 45, 120, 200)  # days before now each project's traces started
GRAINS = {"rollup_1min": "1m", "rollup_1hour": "1h", "rollup_1day": "1d"}


def _rows(ids: dict, now: datetime) -> list[dict]:
    """Two traces per project and age, each a root and a child a minute later, with a user and
    a session; and alpha/main's span 5 minutes inside its rollup retention (60 days), whose
    day began before the cutoff: its minute row stays, its day row goes (the bucket's start
    counts, as on the other stores)."""
    out = []
    for org, project in ids["projects"]:
        for age in AGES:
            for i in range(2):
                at = now - timedelta(days=age, minutes=7 * i)
                root = span(org, project, at, user_id=f"u{age}", session_id=f"s{age}-{i}")
                child = child_of(root, at + timedelta(minutes=1), user_id=f"v{age}")
                out += [root, child]
    edge = now - timedelta(days=60) + timedelta(minutes=5)
    out.append(span(ids["alpha"], ids["a_main"], edge, user_id="edge"))
    return out


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "org": [r["org_id"] for r in rows],
            "project": [r["project_id"] for r in rows],
            "trace": [r["trace_id"] for r in rows],
            "start": [r["start_time"] for r in rows],
            "user": [r["user_id"] for r in rows],
            "session": [r["session_id"] for r in rows],
        }
    )


def _settings(engine, **orgs) -> None:
    """Each org's (span days, rollup days, {project: days}) through the app's own path."""
    for org_id, (span_days, rollup_days, own) in orgs.items():
        scope = Scope(org_id=int(org_id), role=Role.ADMIN)
        set_retention(engine, scope, span_days, rollup_days, own, wait=True)


def _mutations_done(store) -> None:
    """Every mutation of the test's database finished (at most 60 s)."""
    for _ in range(1200):
        ((left,),) = store.client.query(
            "SELECT count() FROM system.mutations WHERE database = %(db)s AND NOT is_done",
            parameters={"db": store.database},
        ).result_rows
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError("the store's mutations did not finish in 60 s")


def _settle(store) -> None:
    """Every mutation of the test's database finished, then the TTLs applied (a merge forced,
    as only a test does)."""
    _mutations_done(store)
    for table in ("spans", "trace_totals", *GRAINS, ddl.ACTORS):
        store.client.command(f"OPTIMIZE TABLE {store.table(table)} FINAL")


def _kept_spans(sent: pl.DataFrame, days: dict, now: datetime) -> pl.DataFrame:
    """The spans their project's days keep (0: all), by the span's own start (the TTL's)."""
    d = pl.struct("org", "project").map_elements(
        lambda k: days.get((k["org"], k["project"]), 0), return_dtype=pl.Int64
    )
    return sent.filter((d == 0) | (pl.col("start") > now - pl.duration(days=d)))


def _stored_traces(store) -> set[tuple[int, int, str]]:
    rows = store.client.query(
        f"SELECT DISTINCT org_id, project_id, trace_id FROM {store.table('trace_totals')}"
    ).result_rows
    return {(int(o), int(p), t) for o, p, t in rows}


def _trace_count(store, org: int, now: datetime, force: str, days: int = 400) -> int:
    spec = FilterSpec(relative=None, start=now - timedelta(days=days), end=now)
    query = MetricQuery(series=("trace_count.count",), filters=spec, bucket=None)
    scope = Scope(org_id=org, role=Role.ADMIN)
    got = run_metrics(store.engine, scope, query, now=now, force=force)
    return int(got.frame["trace_count.count"].item() or 0)


def _rollups(store, table: str) -> dict[tuple[int, datetime], int]:
    rows = store.client.query(
        f"SELECT org_id, bucket_start, sum(span_count) FROM {store.table(table)} "
        "GROUP BY org_id, bucket_start"
    ).result_rows
    return {(int(o), b.replace(tzinfo=UTC)): int(n) for o, b, n in rows}


def _expected_rollups(sent: pl.DataFrame, grain: str, cutoffs: dict, now: datetime) -> dict:
    out = (
        sent.with_columns(pl.col("start").dt.truncate(grain).alias("bucket"))
        .group_by("org", "bucket")
        .agg(pl.len().alias("n"))
    )
    return {
        (o, b): n
        for o, b, n in out.iter_rows()
        if o not in cutoffs or b >= now - timedelta(days=cutoffs[o])
    }


def _actors(store) -> set[tuple]:
    rows = store.client.query(
        f"SELECT DISTINCT org_id, bucket_start, project_id, kind, actor "
        f"FROM {store.table(ddl.ACTORS)}"
    ).result_rows
    return {(int(o), b.replace(tzinfo=UTC), int(p), k, a) for o, b, p, k, a in rows}


def _expected_actors(sent: pl.DataFrame, cutoffs: dict, now: datetime) -> set[tuple]:
    hours = sent.with_columns(pl.col("start").dt.truncate("1h").alias("hour"))
    out = set()
    for kind in ("user", "session"):
        for o, h, p, a in hours.select("org", "hour", "project", kind).drop_nulls().iter_rows():
            if o not in cutoffs or h >= now - timedelta(days=cutoffs[o]):
                out.add((o, h, p, kind, a))
    return out


def _orgs(engine) -> dict:
    """alpha (projects main and own), beta and gamma, every setting empty (kept)."""
    alpha, (a_main, a_own) = make_org(engine, "alpha", projects=("main", "own"))
    beta, (b_main,) = make_org(engine, "beta")
    gamma, (g_main,) = make_org(engine, "gamma")
    return {
        "alpha": alpha,
        "beta": beta,
        "gamma": gamma,
        "a_main": a_main,
        "own": a_own,
        "b_main": b_main,
        "projects": [(alpha, a_main), (alpha, a_own), (beta, b_main), (gamma, g_main)],
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def made(request, tmp_path_factory):
    """DATABASE_URL migrated and its orgs made (`_orgs`) once per kind; each test writes on a
    copy of it (`_copy_of`)."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_url")  # fails loudly, with the fix, if PostgreSQL is down
    with _database(request.param, tmp_path_factory.mktemp("derived") / "made.db") as url:
        engine = get_engine(url)
        upgrade(engine)
        ids = _orgs(engine)
        engine.dispose()
        yield request.param, url, {"ids": ids}


def _deployment(source: dict, store, monkeypatch, tmp_path, now: datetime) -> dict:
    """DATABASE_URL (a copy of `made`), the spans written to the span store, and the
    process's span store the test's."""
    engine, ids = source["engine"], source["ids"]
    rows = _rows(ids, now)
    assert write_spans(store, rows) == len(rows)
    monkeypatch.setenv("DATABASE_URL", source["url"])
    monkeypatch.setattr("observatory_core.base.settings.SECRETS_FILE", tmp_path / "secrets.toml")
    return {"engine": engine, "ids": ids, "rows": rows, "sent": _frame(rows)}


def _use(store, url, monkeypatch) -> None:
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", url)
    get_settings.cache_clear()
    monkeypatch.setitem(current._OPEN, url, store)


def test_rollups_actors_and_trace_totals_follow_the_retention(
    made, tmp_path, chdb_session, monkeypatch
):
    now = datetime.now(UTC)
    store = chdb_session.store("derived_retention")
    with _copy_of(made, tmp_path / "derived.db") as source:
        try:
            _use(store, chdb_session.url(store.database), monkeypatch)
            d = _deployment(source, store, monkeypatch, tmp_path, now)
            ids, sent, engine = d["ids"], d["sent"], d["engine"]
            alpha, beta = ids["alpha"], ids["beta"]
            # alpha: spans 30 days, its project `own` 7, rollups 60; beta: 90 and 150; gamma kept
            _settings(engine, **{str(alpha): (30, 60, {ids["own"]: 7}), str(beta): (90, 150, {})})
            said = restamp_span_store(engine, now=now)  # the worker's retention run
            assert said.said and "rollup rows of 2 org(s)" in said.said
            _settle(store)
            days = {(alpha, ids["a_main"]): 30, (alpha, ids["own"]): 7, (beta, ids["b_main"]): 90}
            kept = _kept_spans(sent, days, now)
            # what a user reads: a trace counted while any of its spans is left, from the trace
            # totals (the rollup path) as from the spans (raw)
            assert _stored_traces(store) == {
                (o, p, t) for o, p, t in kept.select("org", "project", "trace").unique().iter_rows()
            }
            for org in (alpha, beta, ids["gamma"]):
                want = kept.filter(pl.col("org") == org)["trace"].n_unique()
                assert _trace_count(store, org, now, "rollup") == want, org
                assert _trace_count(store, org, now, "raw") == want, org
            assert kept.height < sent.height  # the TTL did delete spans
            cutoffs = {alpha: 60, beta: 150}
            for table, grain in GRAINS.items():
                assert _rollups(store, table) == _expected_rollups(sent, grain, cutoffs, now)
            assert _actors(store) == _expected_actors(sent, cutoffs, now)
            edge = now - timedelta(days=60) + timedelta(minutes=5)
            minute = edge.replace(second=0, microsecond=0)
            assert (alpha, minute) in _rollups(store, "rollup_1min")
            assert (alpha, minute.replace(hour=0, minute=0)) not in _rollups(store, "rollup_1day")

            # a change: alpha's rollups down to 40 days, its spans up to 35 (read at the next
            # run: no re-stamp of rollup rows); the trace totals carry the spans' new days
            _settings(engine, **{str(alpha): (35, 40, {ids["own"]: 7})})
            restamp_span_store(engine, now=now)
            _settle(store)
            cutoffs[alpha] = 40
            for table, grain in GRAINS.items():
                assert _rollups(store, table) == _expected_rollups(sent, grain, cutoffs, now)
            assert _actors(store) == _expected_actors(sent, cutoffs, now)
            stamps = store.client.query(
                f"SELECT DISTINCT project_id, retain_days FROM {store.table('trace_totals')} "
                f"WHERE org_id = {alpha}"
            ).result_rows
            assert sorted(stamps) == sorted([(ids["a_main"], 35), (ids["own"], 7)])
            assert restamp_span_store(engine, now=now).said is None  # nothing left to do
        finally:
            get_settings.cache_clear()
            chdb_session.drop(store)


def test_a_store_at_version_5_opened_at_6_expires_its_trace_totals(
    made, tmp_path, chdb_session, monkeypatch
):
    """Trace totals written before version 6 hold no days (0, kept): the first retention run
    after the upgrade stamps them, and their TTL then deletes those of spans gone."""
    now = datetime.now(UTC)
    url, store = store_at_version(chdb_session, "derived_v5", 5)
    with _copy_of(made, tmp_path / "v5.db") as source:
        try:
            d = _deployment(source, store, monkeypatch, tmp_path, now)
            store.close()
            store = open_span_store(url)
            versions = store.client.query(f"SELECT version FROM {store.table('schema_versions')}")
            assert sorted(v for (v,) in versions.result_rows) == [m.version for m in ddl.MIGRATIONS]
            _use(store, url, monkeypatch)
            ids, sent, engine = d["ids"], d["sent"], d["engine"]
            alpha = ids["alpha"]
            _settings(engine, **{str(alpha): (30, None, {})})
            restamp_span_store(engine, now=now)
            _settle(store)
            kept = _kept_spans(sent, {(alpha, p): 30 for p in (ids["a_main"], ids["own"])}, now)
            assert _stored_traces(store) == {
                (o, p, t) for o, p, t in kept.select("org", "project", "trace").unique().iter_rows()
            }
            want = kept.filter(pl.col("org") == alpha)["trace"].n_unique()
            assert _trace_count(store, alpha, now, "rollup") == want
            # rollups kept (no rollup retention): every span written still counts
            assert sum(_rollups(store, "rollup_1day").values()) == sent.height
        finally:
            get_settings.cache_clear()
            chdb_session.drop(store)


def test_a_trace_with_a_span_kept_forever_keeps_its_totals(chdb_session, monkeypatch):
    """Ingest stamps spans with settings up to a minute old, so a trace written across a
    change can hold a span at 30 days and one kept forever (0): its totals must stay while the
    forever span does, though the 30-day span's time has passed (the largest stamp of the two
    was 30, and the totals' TTL deleted them with the forever span still stored)."""
    now = datetime.now(UTC)
    store = chdb_session.store("forever_wins")
    try:
        org, project = 901, 1
        at = now - timedelta(days=40)
        root = span(org, project, at)
        child = child_of(root, at + timedelta(minutes=1))
        other = span(org, project, at)  # a trace of 30-day spans only: its totals go
        # kept forever since 1982: 65535 days on from then is past 2106 and a DateTime wraps
        # round to a past date, so the totals' TTL must leave the forever stamp out
        old = span(org, project, datetime(1982, 1, 4, tzinfo=UTC))
        totals = store.table("trace_totals")
        store.client.command(f"SYSTEM STOP TTL MERGES {totals}")
        # written while they were inside their 30 days (the write drops a span already past)
        with monkeypatch.context() as m:
            m.setattr("observatory_core.storage.clickhouse.writes.unexpired", lambda rows, _: rows)
            assert write_spans(store, [root, other], retain_days={(org, 0): 30}) == 2
        assert write_spans(store, [child, old], retain_days={(org, 0): 0}) == 2
        # the trace's partial totals merged into one row before the 30 days passed, as parts
        # merge long before that in a store (here the TTL held back from the writes on)
        store.client.command(f"OPTIMIZE TABLE {totals} FINAL")
        store.client.command(f"SYSTEM START TTL MERGES {totals}")
        _settle(store)
        kept = _frame([child, old])
        spans_left = store.client.query(
            f"SELECT span_id FROM {store.table('spans')} FINAL WHERE org_id = {org}"
        ).result_rows
        # the spans' own TTL
        assert sorted(s for (s,) in spans_left) == sorted([child["span_id"], old["span_id"]])
        assert _stored_traces(store) == {(org, project, t) for t in kept["trace"]}
        want = kept["trace"].n_unique()
        since = (now - datetime(1982, 1, 1, tzinfo=UTC)).days
        assert _trace_count(store, org, now, "rollup", since) == want == 2
        assert _trace_count(store, org, now, "raw", since) == want
        # the re-stamp compares forever as the totals store it: nothing stale, nothing sent
        forever = restamp.Stamp(org)
        assert restamp.stale(store, [forever], "trace_totals") == {}
        assert restamp.stale(store, [forever]) == {}
    finally:
        chdb_session.drop(store)
