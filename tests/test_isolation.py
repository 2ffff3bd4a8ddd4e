"""A user of one org sees none of another org's spans, through every read of the core."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.settings import get_settings
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import MetricResult, run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.reports.live import Feed, live_feed
from observatory_core.reports.overview import Overview, period_overview, top
from observatory_core.reports.summary import home_summary, period_stats, requests_per_hour
from observatory_core.storage.clickhouse.current import close_span_stores
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import spans
from observatory_core.storage.span_reads import span_reads
from observatory_core.traces.detail import TraceDetail, get_trace
from observatory_core.traces.query import Page, list_spans
from observatory_core.traces.values import distinct_values
from tests.helpers import END, make_org, span, write
from tests.restore import shared

ALL_TIME = FilterSpec(relative=None)
_DAY = FilterSpec(relative="24h")
_COUNT = MetricQuery(series=("request_count",), bucket=None, group_by=("model",), filters=_DAY)
SHARED_TRACE = "f" * 32  # globex's trace id; acme must never see it
# Every public read of the core that takes a scope, given the engine spans are read from as the
# pages and the API give it (`span_reads`: the span store's when one is set); later features
# add theirs here.
READS = {
    "period_stats": lambda e, s: period_stats(span_reads(e), s, END - timedelta(days=2), END),
    "requests_per_hour": lambda e, s: requests_per_hour(
        span_reads(e), s, END - timedelta(days=2), END
    ),
    "home_summary": lambda e, s: home_summary(span_reads(e), s, now=END),
    "list_spans": lambda e, s: list_spans(span_reads(e), s, ALL_TIME, limit=1000, count=True),
    "list_traces": lambda e, s: list_spans(
        span_reads(e), s, ALL_TIME, mode="traces", count=True, limit=1000
    ),
    "get_trace": lambda e, s: get_trace(span_reads(e), s, SHARED_TRACE),
    "distinct_values": lambda e, s: distinct_values(span_reads(e), s, "model"),
    "metrics_raw": lambda e, s: run_metrics(span_reads(e), s, _COUNT, now=END, force="raw"),
    "metrics_rollup": lambda e, s: run_metrics(span_reads(e), s, _COUNT, now=END, force="rollup"),
    "metrics_series": lambda e, s: run_metrics(
        span_reads(e),
        s,
        MetricQuery(series=("request_count",), bucket="1hour", filters=_DAY),
        now=END,
    ),
    "top_models": lambda e, s: top(span_reads(e), s, _DAY, "model", "requests", now=END),
    "overview": lambda e, s: period_overview(span_reads(e), s, _DAY, now=END),
    "live_feed": lambda e, s: live_feed(
        e, s, ALL_TIME, since=END - timedelta(days=2), now=END, spans=span_reads(e)
    ),
}


def _total(result) -> int:
    if result is None:
        return 0
    if isinstance(result, MetricResult):
        return int(result.frame["request_count.count"].sum())
    if isinstance(result, Overview):
        return sum(k.current + k.previous for k in result.kpis if k.key == "requests")
    if isinstance(result, Page):
        return sum(r.get("span_count", 1) for r in result.rows)
    if isinstance(result, Feed):
        return len(result.spans)
    if isinstance(result, TraceDetail):
        return len(result.spans)
    if isinstance(result, list):
        return sum(n for _, n in result) if result and isinstance(result[0], tuple) else len(result)
    if hasattr(result, "current"):
        return result.current.requests + result.previous.requests
    return result.requests


# What each read counts for acme, globex and an empty org.
EXPECTED = {
    "get_trace": (0, 5, 0),
    "distinct_values": (2, 1, 0),
    "list_traces": (11, 5, 0),
}


def _two_orgs(engine) -> dict[str, int]:
    a, (a1, a2) = make_org(engine, "acme", projects=("one", "two"))
    b, (b1,) = make_org(engine, "globex")
    empty, _ = make_org(engine, "initech")
    t = END - timedelta(hours=3)
    write(engine, [span(a, a1, t, model="m-one") for _ in range(7)])
    write(engine, [span(a, a2, t, model="m-two") for _ in range(4)])
    rows = [
        span(b, b1, t, trace_id=SHARED_TRACE, span_id=f"{i + 1:016x}", model="m-b")
        for i in range(5)
    ]
    rows = [r if i == 0 else {**r, "parent_span_id": f"{1:016x}"} for i, r in enumerate(rows)]
    write(engine, rows)
    return {"acme": a, "globex": b, "initech": empty, "acme_two": a2}


@pytest.fixture(scope="module")
def _loaded() -> dict:
    return {}


@pytest.fixture
def two_orgs(db_url, _loaded):
    """The two orgs written once per database for the module (the reads only read), put back
    before each test if anything changed them."""
    data = shared(_loaded, db_url, _two_orgs)
    return data.engine, data.loaded


@pytest.fixture(scope="module")
def span_store_orgs(tmp_path_factory, chdb_session):
    """The same orgs with their spans written into a ClickHouse span store (chDB) alone, so a
    read that went to DATABASE_URL's spans would find none."""
    engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp('isolation') / 'app.db'}")
    upgrade(engine)
    store = chdb_session.store("isolation")
    url = chdb_session.url(store.database)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OBSERVATORY_SPAN_STORE", url)
        get_settings.cache_clear()
        ids = _two_orgs(engine)
        get_settings.cache_clear()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spans)).scalar() == 0
    yield engine, ids, url
    close_span_stores()
    chdb_session.drop(store)


@pytest.fixture
def on_span_store(span_store_orgs, monkeypatch):
    engine, ids, url = span_store_orgs
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", url)
    get_settings.cache_clear()
    yield engine, ids
    get_settings.cache_clear()


@pytest.mark.parametrize("read", sorted(READS))
def test_each_org_sees_only_its_own_spans(two_orgs, read):
    _only_its_own(*two_orgs, read)


@pytest.mark.parametrize("read", sorted(READS))
def test_each_org_sees_only_its_own_spans_on_the_span_store(on_span_store, read):
    _only_its_own(*on_span_store, read)


def _only_its_own(engine, ids: dict[str, int], read: str) -> None:
    fn = READS[read]
    acme, globex, empty = EXPECTED.get(read, (11, 5, 0))
    assert _total(fn(engine, Scope(org_id=ids["acme"], role=Role.ADMIN))) == acme
    assert _total(fn(engine, Scope(org_id=ids["globex"], role=Role.VIEWER))) == globex
    assert _total(fn(engine, Scope(org_id=ids["initech"], role=Role.ADMIN))) == empty


@pytest.mark.parametrize("read", sorted(READS))
def test_project_limited_user_sees_only_their_projects(two_orgs, read):
    _only_their_projects(*two_orgs, read)


@pytest.mark.parametrize("read", sorted(READS))
def test_project_limited_user_sees_only_their_projects_on_the_span_store(on_span_store, read):
    _only_their_projects(*on_span_store, read)


def _only_their_projects(engine, ids: dict[str, int], read: str) -> None:
    scope = Scope(org_id=ids["acme"], role=Role.DEVELOPER, project_ids=frozenset({ids["acme_two"]}))
    expected = {"get_trace": 0, "distinct_values": 1}.get(read, 4)
    assert _total(READS[read](engine, scope)) == expected


def test_a_project_of_another_org_grants_nothing(two_orgs):
    _grants_nothing(*two_orgs)


def test_a_project_of_another_org_grants_nothing_on_the_span_store(on_span_store):
    _grants_nothing(*on_span_store)


def _grants_nothing(engine, ids: dict[str, int]) -> None:
    scope = Scope(org_id=ids["globex"], role=Role.ADMIN, project_ids=frozenset({ids["acme_two"]}))
    assert _total(READS["period_stats"](engine, scope)) == 0
