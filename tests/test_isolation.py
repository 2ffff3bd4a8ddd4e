"""A user of one org sees none of another org's spans, through every read of the core."""

from datetime import timedelta

import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import MetricResult, run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.reports.live import Feed, live_feed
from observatory_core.reports.overview import Overview, period_overview, top
from observatory_core.reports.summary import home_summary, period_stats, requests_per_hour
from observatory_core.traces.detail import TraceDetail, get_trace
from observatory_core.traces.query import Page, list_spans
from observatory_core.traces.values import distinct_values
from tests.helpers import END, make_org, span, write

ALL_TIME = FilterSpec(relative=None)
_DAY = FilterSpec(relative="24h")
_COUNT = MetricQuery(series=("request_count",), bucket=None, group_by=("model",), filters=_DAY)
SHARED_TRACE = "f" * 32  # globex's trace id; acme must never see it
# Every public read of the core that takes a scope; later features add theirs here.
READS = {
    "period_stats": lambda e, s: period_stats(e, s, END - timedelta(days=2), END),
    "requests_per_hour": lambda e, s: requests_per_hour(e, s, END - timedelta(days=2), END),
    "home_summary": lambda e, s: home_summary(e, s, now=END),
    "list_spans": lambda e, s: list_spans(e, s, ALL_TIME, limit=1000, count=True),
    "list_traces": lambda e, s: list_spans(e, s, ALL_TIME, mode="traces", count=True, limit=1000),
    "get_trace": lambda e, s: get_trace(e, s, SHARED_TRACE),
    "distinct_values": lambda e, s: distinct_values(e, s, "model"),
    "metrics_raw": lambda e, s: run_metrics(e, s, _COUNT, now=END, force="raw"),
    "metrics_rollup": lambda e, s: run_metrics(e, s, _COUNT, now=END, force="rollup"),
    "metrics_series": lambda e, s: run_metrics(
        e, s, MetricQuery(series=("request_count",), bucket="1hour", filters=_DAY), now=END
    ),
    "top_models": lambda e, s: top(e, s, _DAY, "model", "requests", now=END),
    "overview": lambda e, s: period_overview(e, s, _DAY, now=END),
    "live_feed": lambda e, s: live_feed(e, s, ALL_TIME, since=END - timedelta(days=2), now=END),
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


@pytest.fixture
def two_orgs(engine):
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
    return engine, {"acme": a, "globex": b, "initech": empty, "acme_two": a2}


@pytest.mark.parametrize("read", sorted(READS))
def test_each_org_sees_only_its_own_spans(two_orgs, read):
    engine, ids = two_orgs
    fn = READS[read]
    acme, globex, empty = EXPECTED.get(read, (11, 5, 0))
    assert _total(fn(engine, Scope(org_id=ids["acme"], role=Role.ADMIN))) == acme
    assert _total(fn(engine, Scope(org_id=ids["globex"], role=Role.VIEWER))) == globex
    assert _total(fn(engine, Scope(org_id=ids["initech"], role=Role.ADMIN))) == empty


@pytest.mark.parametrize("read", sorted(READS))
def test_project_limited_user_sees_only_their_projects(two_orgs, read):
    engine, ids = two_orgs
    scope = Scope(org_id=ids["acme"], role=Role.DEVELOPER, project_ids=frozenset({ids["acme_two"]}))
    expected = {"get_trace": 0, "distinct_values": 1}.get(read, 4)
    assert _total(READS[read](engine, scope)) == expected


def test_a_project_of_another_org_grants_nothing(two_orgs):
    engine, ids = two_orgs
    scope = Scope(org_id=ids["globex"], role=Role.ADMIN, project_ids=frozenset({ids["acme_two"]}))
    assert _total(READS["period_stats"](engine, scope)) == 0
