"""A trace made only of a twin set aside (its one span the copy the rule does not count): how
the Traces list, its days and the trace counts take it, on SQLite, PostgreSQL and the span
store, the twins set aside in one batch and across two (docs/scale.md, "Known gaps")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest import to_clickhouse
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.traces.days import list_days
from observatory_core.traces.query import list_spans
from tests.helpers import admin_scope, make_org
from tests.ingest.clickhouse.test_twin_keeper import _separate
from tests.ingest.clickhouse.twin_figures import AT, NOW, _on_sqlite


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory):
    engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp('aside-sqlite') / 'o.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres(pg_url):
    engine = get_engine(pg_url)
    upgrade(engine)
    yield engine


def _spec(**filters) -> FilterSpec:
    return FilterSpec(relative=None, start=AT - timedelta(hours=1), end=NOW, **filters)


def _figures(engine, org: int) -> dict:
    """What a reader sees of the org's traces: the list's rows (trace, spans) by the root's
    start and by cost, its count, its days' rows, and the trace count of the Overview and Home."""
    scope = admin_scope(org)
    out = {}
    for sort in ("start_time", "total_cost_usd"):
        page = list_spans(engine, scope, _spec(), mode="traces", sort=sort, limit=50, now=NOW,
                          count=True)  # fmt: skip
        out[sort] = sorted((r["trace_id"], r["span_count"]) for r in page.rows)
        out[f"{sort} total"] = page.total
    days = list_days(engine, scope, _spec(), mode="traces", now=NOW)
    out["days"] = days.total
    query = MetricQuery(series=("trace_count.count",), filters=_spec(), bucket=None)
    out["trace_count"] = int(run_metrics(engine, scope, query, now=NOW).frame[0, 0])
    return out


def _want(case, aside: str) -> dict:
    """The list lists every trace with a matching span, a twin set aside too (as spans mode
    lists it), by its root's start, with no totals (it counts nothing); its count and days
    count what it lists. A tree total is read from the trace totals, which hold no such trace,
    and the trace count (Overview, Home) counts traces with a span that counts."""
    kept = case.counted[0]["trace_id"]
    return {
        "start_time": sorted([(kept, 1), (aside, 0)]),
        "start_time total": 2,
        "total_cost_usd": [(kept, 1)],
        "total_cost_usd total": 1,
        "days": 2,
        "trace_count": 1,
    }


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="SQLite and PostgreSQL leave it off the first page by the root's start (docs/scale.md, "
    "Known gaps): a probe of set-aside spans per root slowed that page on PostgreSQL 2.5 times",
)
@pytest.mark.parametrize("batches", ["one", "two"])
def test_a_trace_of_a_twin_set_aside_alone_on_every_store(ch_ingest, sqlite, postgres, batches):
    """The twins of `_separate` (the stored copy's trace holds it alone), in one batch or two:
    every store should list, count and total it alike. SQLite and PostgreSQL leave it off the
    first page by the root's start, where they walk the roots and probe the trace totals
    (which count no set-aside span), though its count and days count it."""
    slug = f"only-aside-{batches}"
    org, (main,) = make_org(ch_ingest.engine, slug, ("main",))
    case = _separate(org, main)
    aside = case.batches[0][0]["trace_id"]
    written = case.batches if batches == "two" else [[r for b in case.batches for r in b]]
    for batch in written:
        to_clickhouse.write_spans(ch_ingest.store, ch_ingest.engine, batch)
    found = {"chdb": _figures(ch_ingest.store.engine, org)}
    for name, engine in (("sqlite", sqlite), ("postgresql", postgres)):
        found[name] = _figures(engine, _on_sqlite(engine, slug, written))
    assert found == dict.fromkeys(found, _want(case, aside))
