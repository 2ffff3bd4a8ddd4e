"""The declarations themselves: a declaration the engines cannot compute is refused, and a
subject the engines cannot yet restrict rows to is never counted over all spans."""

import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.raw import series_expression
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


def test_a_subject_other_than_spans_is_refused_not_counted_over_spans(monkeypatch):
    calls = Metric(
        "llm_call_count",
        "LLM calls",
        "count",
        Subject.LLM_CALLS,
        Kind.ROWS,
        (Agg.COUNT,),
        rollup=Partials("span_count"),
    )
    monkeypatch.setitem(METRICS, calls.name, calls)
    assert not rollup_can_answer(("llm_call_count.count",), (), FilterSpec())
    with pytest.raises(ValueError, match="over spans only"):
        series_expression("llm_call_count.count")


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
