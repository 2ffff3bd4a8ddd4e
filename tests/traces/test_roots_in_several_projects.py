"""Traces mode by a tree total for a trace whose root was written in two projects: every store
lists it by the root that arrived last, and a page pinned before that root arrived leaves the
trace off (SQLite and PostgreSQL keep each project's first root id in `trace_totals` and list
the greatest; the span store's `trace_totals.summed_per_trace` must answer the same)."""

from datetime import timedelta

import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.query import list_spans
from tests.helpers import child_of, span
from tests.traces.conftest import NOW


def _walk(engine, scope, spec, first, **walk) -> list[dict]:
    rows, page = [], first
    for _ in range(50):
        rows += page.rows
        if not page.next_cursor:
            return rows
        page = list_spans(engine, scope, spec, cursor=page.next_cursor, **walk)
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_a_trace_with_roots_in_two_projects_is_listed_by_the_root_that_arrived_last(
    explorer, direction
):
    engine, org = explorer["engine"], explorer["acme"]
    one, two = explorer["projects"]
    at = NOW - timedelta(hours=2)
    env = {"environment": f"two-roots-{direction}"}  # these traces only
    trace = f"{0xD0D0 + (direction == 'asc'):032x}"
    # the later root has the smaller span id: not the greatest span id, the one written last
    first_root = span(org, one, at, trace_id=trace, span_id="f" * 16, input_cost_usd=1.0, **env)
    last_root = span(
        org, two, at + timedelta(seconds=1), trace_id=trace, span_id="1" * 16,
        input_cost_usd=1.0, **env,
    )  # fmt: skip
    others = [span(org, one, at, input_cost_usd=c, **env) for c in (5.0, 4.0, 0.5, 0.1)]
    explorer["write"]([first_root, child_of(first_root, at, input_cost_usd=0.25, **env), *others])
    scope = Scope(org_id=org, role=Role.ADMIN)
    spec = FilterSpec(relative="7d", environments=(env["environment"],))
    walk = dict(mode="traces", sort="total_cost_usd", direction=direction, limit=1)
    try:
        pinned = list_spans(engine, scope, spec, now=NOW, **walk)  # before the second root
        explorer["write"]([last_root])
        by_cost = sorted(others, key=lambda r: r["total_cost_usd"], reverse=direction == "desc")
        seen = [r["trace_id"] for r in _walk(engine, scope, spec, pinned, **walk)]
        assert seen == [r["trace_id"] for r in by_cost], "off the pages pinned before its root"
        fresh = _walk(engine, scope, spec, list_spans(engine, scope, spec, now=NOW, **walk), **walk)
        (row,) = [r for r in fresh if r["trace_id"] == trace]
        assert row["span_id"] == last_root["span_id"], "listed by the root written last"
        # on a first page too, which the span store ranks without the join (tree_ranking)
        first = list_spans(engine, scope, spec, now=NOW, **{**walk, "limit": 10}).rows
        (row,) = [r for r in first if r["trace_id"] == trace]
        assert row["span_id"] == last_root["span_id"], "a first page's root, written last"
        assert row["total_cost_usd"] == pytest.approx(2.25) and row["span_count"] == 3
        assert len(fresh) == len(others) + 1
    finally:
        explorer["remove"]([trace, *(r["trace_id"] for r in others)])
