"""A user of one org sees none of another org's spans, through every read of the core."""

from datetime import timedelta

import pytest

from observatory_core.permissions import Role
from observatory_core.scope import Scope
from observatory_core.summary import home_summary, period_stats, requests_per_hour
from tests.helpers import END, make_org, span, write

# Every public read of the core that takes a scope; later features add theirs here.
READS = {
    "period_stats": lambda e, s: period_stats(e, s, END - timedelta(days=2), END),
    "requests_per_hour": lambda e, s: requests_per_hour(e, s, END - timedelta(days=2), END),
    "home_summary": lambda e, s: home_summary(e, s, now=END),
}


def _total(result) -> int:
    if isinstance(result, list):
        return sum(n for _, n in result)
    if hasattr(result, "current"):
        return result.current.requests + result.previous.requests
    return result.requests


@pytest.fixture
def two_orgs(engine):
    a, (a1, a2) = make_org(engine, "acme", projects=("one", "two"))
    b, (b1,) = make_org(engine, "globex")
    empty, _ = make_org(engine, "initech")
    t = END - timedelta(hours=3)
    write(engine, [span(a, a1, t) for _ in range(7)] + [span(a, a2, t) for _ in range(4)])
    write(engine, [span(b, b1, t, trace_id="f" * 32, span_id=f"{i:016x}") for i in range(5)])
    return engine, {"acme": a, "globex": b, "initech": empty, "acme_two": a2}


@pytest.mark.parametrize("read", sorted(READS))
def test_each_org_sees_only_its_own_spans(two_orgs, read):
    engine, ids = two_orgs
    fn = READS[read]
    assert _total(fn(engine, Scope(org_id=ids["acme"], role=Role.ADMIN))) == 11
    assert _total(fn(engine, Scope(org_id=ids["globex"], role=Role.VIEWER))) == 5
    assert _total(fn(engine, Scope(org_id=ids["initech"], role=Role.ADMIN))) == 0


@pytest.mark.parametrize("read", sorted(READS))
def test_project_limited_user_sees_only_their_projects(two_orgs, read):
    engine, ids = two_orgs
    scope = Scope(org_id=ids["acme"], role=Role.DEVELOPER, project_ids=frozenset({ids["acme_two"]}))
    assert _total(READS[read](engine, scope)) == 4


def test_a_project_of_another_org_grants_nothing(two_orgs):
    engine, ids = two_orgs
    scope = Scope(org_id=ids["globex"], role=Role.ADMIN, project_ids=frozenset({ids["acme_two"]}))
    assert _total(READS["period_stats"](engine, scope)) == 0
