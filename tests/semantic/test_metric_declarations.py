"""The declarations themselves: a declaration the engines cannot compute is refused, and a
subject the span engines cannot restrict rows to is never counted over all spans."""

import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.rollup_path import rollup_can_answer
from observatory_core.semantic.metrics import (
    METRICS,
    Agg,
    Kind,
    Metric,
    Partials,
    Subject,
    rollup_counts,
    rollup_measures,
    sketched,
)


def test_every_declaration_is_complete_and_its_columns_are_owned_once():
    for m in METRICS.values():
        m.check()
    assert list(rollup_counts()) == ["span_count", "error_count"]
    assert rollup_counts()["span_count"].expression is None  # every span
    layouts = [m.rollup.layout for m in rollup_measures().values()]
    assert layouts == sorted(set(layouts))
    assert sketched().name == "duration_ms"


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"kind": Kind.VALUE, "expression": None}, "needs an expression"),
        ({"kind": Kind.DISTINCT, "rollup": Partials("span_count")}, "distinct count"),
        ({"kind": Kind.SHARE, "rollup": Partials("error_count")}, "need `of`"),
        ({"kind": Kind.VALUE, "rollup": Partials("duration")}, "`layout`"),
        ({"kind": Kind.ROWS, "aggregations": (Agg.COUNT, Agg.SUM)}, "one aggregation"),
    ],
)
def test_an_incomplete_declaration_is_refused(kw, problem):
    fields = {
        "kind": Kind.VALUE,
        "aggregations": (Agg.SUM,),
        "expression": lambda c: c.duration_ms,
        "rollup": None,
        **kw,
    }
    metric = Metric("broken", "Broken", "ms", Subject.SPANS, **fields)
    with pytest.raises(ValueError, match=problem):
        metric.check()


def test_a_subject_that_is_not_one_of_spans_is_refused_not_counted_over_spans(monkeypatch):
    """Traces are not rows of spans: the span engines refuse the subject rather than count
    every span (LLM calls and the operations' subjects restrict spans: tests/metrics)."""
    from datetime import UTC, datetime

    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.scope import Scope
    from observatory_core.metrics.raw import raw_select

    per_trace = Metric(
        "trace_rows",
        "Trace rows",
        "count",
        Subject.TRACES,
        Kind.ROWS,
        (Agg.COUNT,),
        rollup=Partials("span_count"),
    )
    monkeypatch.setitem(METRICS, per_trace.name, per_trace)
    assert not rollup_can_answer(("trace_rows.count",), (), FilterSpec())
    scope = Scope(org_id=1, role=Role.ADMIN)
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="not a subject of spans"):
        raw_select(
            scope,
            ("trace_rows.count",),
            (),
            FilterSpec(),
            now,
            "sqlite",
            None,
            False,
            Subject.TRACES,
        )
    with pytest.raises(ValueError, match="not a metric of llm_calls"):
        raw_select(
            scope,
            ("trace_rows.count",),
            (),
            FilterSpec(),
            now,
            "sqlite",
            None,
            False,
            Subject.LLM_CALLS,
        )


def test_an_alerts_sample_is_the_rows_of_its_series_subject():
    """A rule's minimum sample counts what its series counts: requests for LLM-call figures,
    tool calls for a tool-call error rate (issue 24)."""
    from observatory_core.semantic.metrics import sample_series

    assert sample_series("error_rate.avg") == "request_count.count"
    assert sample_series("duration_ms.p95") == "request_count.count"
    assert sample_series("tool_call_error_rate.avg") == "tool_call_count.count"
    assert sample_series("agent_run_duration_ms.p95") == "agent_run_count.count"
    assert sample_series("quality_score.avg") == "span_count.count"


def test_a_trace_metric_takes_no_span_rollup_partials():
    traces = Metric(
        "trace_spans",
        "Spans per trace",
        "count",
        Subject.TRACES,
        Kind.VALUE,
        (Agg.AVG,),
        lambda c: c.span_count,
        Partials("duration", layout=0),
    )
    with pytest.raises(ValueError, match="trace_totals answers it"):
        traces.check()
