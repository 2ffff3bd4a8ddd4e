"""A trace lasts from its earliest span start to its latest span end, whatever its root says."""

from datetime import timedelta

import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.query import list_spans
from tests.helpers import make_org, span, write
from tests.traces.conftest import NOW


def test_a_trace_lasts_from_its_first_start_to_its_last_end(engine):
    """An agent whose root span ended after 9 ms while its work went on for 32 s: the trace
    lasted 32 s, in the list and in the sort by duration."""
    org, (project,) = make_org(engine, "acme")
    t0 = NOW - timedelta(hours=1)
    rows = [
        span(org, project, t0, trace_id="a" * 32, span_id="1" * 16, duration_ms=9.0),
        span(
            org,
            project,
            t0 + timedelta(milliseconds=5),
            trace_id="a" * 32,
            span_id="2" * 16,
            parent_span_id="1" * 16,
            duration_ms=32_000.0,
        ),
        span(org, project, t0, trace_id="b" * 32, span_id="3" * 16, duration_ms=20_000.0),
    ]
    write(engine, rows)
    scope = Scope(org_id=org, role=Role.ADMIN)
    for spec in (FilterSpec(relative="24h"), FilterSpec(relative="24h", models=("gpt-4o",))):
        page = list_spans(engine, scope, spec, mode="traces", sort="duration_ms", now=NOW)
        spec_rows = [(r["trace_id"], r["duration_ms"]) for r in page.rows]
        if spec.models:  # the helper's spans have no model: nothing matches
            assert spec_rows == []
            continue
        assert spec_rows == [("a" * 32, pytest.approx(32_005.0)), ("b" * 32, 20_000.0)]
        by_start = list_spans(engine, scope, spec, mode="traces", sort="start_time", now=NOW)
        assert {r["trace_id"]: r["duration_ms"] for r in by_start.rows}["a" * 32] == (
            pytest.approx(32_005.0)
        )
