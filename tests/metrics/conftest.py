"""Two orgs of varied spans, written in batches (one re-sent) so the rollups are built the way
ingestion builds them, not by a rebuild.

The data set is made on each store of `DATABASE_URL` (SQLite, PostgreSQL) and, for the modules
in `ON_SPAN_STORE`, on the ClickHouse span store too: chDB, its spans copied from a SQLite
database of the same rows by migrate-spans (once per test session), the first batch then sent
to the span store again, so its views build the rollups the way ingest does and a resend must
count once."""

from __future__ import annotations

import random

import pytest

from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.helpers import LoadedRows, all_spans, empty_database, make_org, write
from tests.traces.conftest import NOW, build_rows

METRIC_STORES = ["sqlite", "postgresql"]
# The modules whose reference tests also run on the span store (docs/span-store-internals.md,
# "Metrics on rollups"); the others check what only DATABASE_URL's stores do (declared dimensions'
# back-fill, trace metrics, the packed sketch).
ON_SPAN_STORE = frozenset(
    {
        "tests.metrics.test_engine",
        "tests.metrics.test_traces",
        "tests.metrics.test_estimate_ranges",
        "tests.metrics.test_metric_totals",
    }
)
# The reports' and alerts' checks on the span store: the same copy, chDB only (their reference
# tests on SQLite and PostgreSQL are the modules beside them, on data sets of their own).
SPAN_STORE_ONLY = frozenset(
    {"tests.reports.test_reports_on_span_store", "tests.alerts.test_alerts_on_span_store"}
)


def _enrich(rows, seed):
    rng = random.Random(seed)
    for r in rows:
        if r["operation"] == "chat":
            # mostly a first token well before the end; some at the end or past it (the
            # answer in one piece, or clocks apart) and some without a TTFT
            share = rng.choice([rng.uniform(0.05, 0.5)] * 8 + [1.0, 1.3, None])
            r["ttft_ms"] = None if share is None else round(r["duration_ms"] * share, 3)
            r["quality_score"] = rng.choice([None, round(rng.random(), 3)])
    return rows


def pytest_generate_tests(metafunc):
    if "metrics_data" in metafunc.fixturenames:
        name = metafunc.module.__name__
        extra = ["chdb"] if name in ON_SPAN_STORE else []
        stores = ["chdb"] if name in SPAN_STORE_ONLY else METRIC_STORES + extra
        metafunc.parametrize("metrics_store", stores, indirect=True, scope="module")


@pytest.fixture(scope="module")
def metrics_store(request) -> str:
    """Which store `metrics_data` is on (`pytest_generate_tests` says: a package that uses the
    data set imports that hook with the fixtures)."""
    return request.param


def _rows(acme, acme_projects, globex, globex_projects):
    first = _enrich(build_rows(acme, acme_projects, seed=5, traces=160), seed=5)
    second = _enrich(build_rows(globex, globex_projects, seed=6, traces=40), seed=6)
    return first, second


def _load(engine) -> dict:
    acme, acme_projects = make_org(engine, "acme", projects=("bot", "search"))
    globex, globex_projects = make_org(engine, "globex")
    rows, others = _rows(acme, acme_projects, globex, globex_projects)
    for i in range(0, len(rows), 97):  # many small batches, like ingestion
        write(engine, rows[i : i + 97])
    assert write(engine, rows[:200]) == 0  # re-sent: nothing new, rollups untouched
    write(engine, others)
    return {
        "engine": engine,  # spans and rollups
        "database": engine,  # orgs, budgets, alert rules (DATABASE_URL's)
        "acme": acme,
        "globex": globex,
        "projects": acme_projects,
        "df": all_spans(engine),
        "now": NOW,
        "resend": rows[:200],
    }


# The span store's copy, made once per test session (the modules only read it).
_SPAN_STORE_COPY: dict[int, dict] = {}


def _span_store_copy(request, tmp_path_factory) -> dict:
    from observatory_core.ingest.spanrows import complete_row
    from observatory_core.storage.clickhouse.writes import write_spans
    from tests.chdb_store import copy_into_span_store, with_store_ids

    chdb_session = request.getfixturevalue("chdb_session")
    copy = _SPAN_STORE_COPY.get(id(chdb_session))
    if copy is None:
        source = get_engine(f"sqlite:///{tmp_path_factory.mktemp('metrics_ch') / 'source.db'}")
        upgrade(source)
        data = _load(source)
        store = copy_into_span_store(chdb_session, source, "metrics")
        source.dispose()  # still "database": orgs, budgets and rules stay in DATABASE_URL
        # the first batch sent again, now to the span store: stored once, counted once
        assert write_spans(store, [complete_row(dict(r), 16_000) for r in data["resend"]]) == 0
        copy = _SPAN_STORE_COPY[id(chdb_session)] = {
            **data,
            "engine": store.engine,
            "store": store,
            "df": with_store_ids(data["df"], store),
        }
    return copy


_MIGRATED: dict[str, str] = {}  # kind -> the session's migrated database of that kind


def _database_url(request, tmp_path_factory, kind: str) -> str:
    """As `db_url` gives (one migrated database per kind and session), for a kind chosen here."""
    if kind not in _MIGRATED:
        if kind == "postgresql":
            url = request.getfixturevalue("pg_url")
        else:
            url = f"sqlite:///{tmp_path_factory.mktemp('metrics') / 'observatory.db'}"
        upgrade(get_engine(url))
        _MIGRATED[kind] = url
    return _MIGRATED[kind]


# database url -> its rows as the first module's load left them, and what that load returned
_LOADED: dict[str, tuple[LoadedRows, dict]] = {}


def _loaded(url: str, tmp_path_factory) -> dict:
    """The data set in the emptied database at `url`: written batch by batch by the session's
    first module on it, its rows (spans and the rollups those batches built) copied back for
    the next modules (a module may change them; the next one starts from the same rows)."""
    engine = empty_database(url)
    if url not in _LOADED:
        data = _load(engine)
        _LOADED[url] = (LoadedRows(engine, tmp_path_factory.mktemp("metrics_rows")), data)
        return data
    rows, data = _LOADED[url]
    rows.restore(engine)
    return {**data, "resend": [dict(r) for r in data["resend"]]}


@pytest.fixture(scope="module")
def metrics_data(request, metrics_store, tmp_path_factory):
    if metrics_store == "chdb":
        return {**_span_store_copy(request, tmp_path_factory), "kind": metrics_store}
    url = _database_url(request, tmp_path_factory, metrics_store)
    return {**_loaded(url, tmp_path_factory), "kind": metrics_store}
