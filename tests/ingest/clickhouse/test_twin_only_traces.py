"""A trace made only of a twin set aside (its one span the copy the rule does not count): how
the Traces list, its days and the trace counts take it, on SQLite, PostgreSQL and the span
store, the twins set aside in one batch and across two (`traces/counted_traces.py`)."""

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
    start and by cost, its count, its days' rows, and the trace count of the Overview and Home;
    for the window alone (the default view: SQLite and PostgreSQL walk the roots and probe the
    trace totals, the span store reads its newest roots) and with a filter both spans pass
    (the plain reads)."""
    scope = admin_scope(org)
    out = {}
    for name, spec in (("window", _spec()), ("status", _spec(statuses=("ok",)))):
        for sort in ("start_time", "total_cost_usd"):
            page = list_spans(engine, scope, spec, mode="traces", sort=sort, limit=50, now=NOW,
                              count=True)  # fmt: skip
            out[f"{name} {sort}"] = sorted((r["trace_id"], r["span_count"]) for r in page.rows)
            out[f"{name} {sort} total"] = page.total
        out[f"{name} days"] = list_days(engine, scope, spec, mode="traces", now=NOW).total
        query = MetricQuery(series=("trace_count.count",), filters=spec, bucket=None)
        out[f"{name} trace_count"] = int(run_metrics(engine, scope, query, now=NOW).frame[0, 0])
    spans = list_spans(engine, scope, _spec(), mode="spans", limit=50, now=NOW, count=True)
    out["spans"] = sorted(r["trace_id"] for r in spans.rows)
    out["spans total"] = spans.total
    return out


def _want(case, aside: str) -> dict:
    """The trace of the set-aside copy alone counts nothing (its call is counted once, in its
    twin's trace), so no figure of traces holds it: not the list by the root's start, nor its
    count or days, as the list by a tree total (read from the trace totals, which hold no such
    trace) and the trace count of the Overview and Home (traces with a span that counts) leave
    it out. Every listed trace counts a span; the figures agree whatever the sort or page. Spans
    mode lists every span, the set-aside copy too (marked as its twin's duplicate)."""
    kept = case.counted[0]["trace_id"]
    out = {}
    for name in ("window", "status"):
        for sort in ("start_time", "total_cost_usd"):
            out[f"{name} {sort}"] = [(kept, 1)]
            out[f"{name} {sort} total"] = 1
        out[f"{name} days"] = 1
        out[f"{name} trace_count"] = 1
    out["spans"] = sorted([kept, aside])
    out["spans total"] = 2
    return out


@pytest.mark.parametrize("batches", ["one", "two"])
def test_a_trace_of_a_twin_set_aside_alone_on_every_store(ch_ingest, sqlite, postgres, batches):
    """The twins of `_separate` (the stored copy's trace holds it alone), in one batch or two:
    every store lists, counts and totals it alike, as `_want` says. It was listed by the span
    store and left off SQLite's and PostgreSQL's default first page (which walk the roots and
    probe the trace totals) while every store's total and days counted it."""
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
