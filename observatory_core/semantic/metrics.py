"""Every metric, declared once: what it is computed over, how a row becomes a value, where the
rollups keep its partials, which aggregations fit and who may see it (docs/metrics.md).

The raw path (`metrics/raw.py`), the rollup path (`metrics/rollup_path.py`), the rollup writer
(`rollups/partials.py`), the rollup tables' count and measure columns (`storage/schema.py`) and
Home's figures (through the metrics engine) read these declarations; none of them names a metric.
Adding a raw-only metric is one `Metric(...)` below; one with rollup partials of its own also
needs a migration for its columns and `rollups rebuild` (docs/architecture.md, "Add a metric").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import and_, case, true
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.accounts.permissions import Permission
from observatory_core.semantic.field_lookups import FIELD_NEEDS


class Agg(StrEnum):
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    STDDEV = "stddev"  # sample standard deviation, for spread at a glance
    P50 = "p50"
    P90 = "p90"
    P95 = "p95"
    P99 = "p99"


PERCENTILES = {Agg.P50: 0.5, Agg.P90: 0.9, Agg.P95: 0.95, Agg.P99: 0.99}
# Aggregations whose empty bucket is a zero; the others leave a gap.
ZERO_WHEN_EMPTY = {Agg.COUNT, Agg.SUM}
# A value metric: count (of rows with a value), sum, avg, min, max, stddev, percentiles.
VALUE_AGGS = tuple(Agg)


class Subject(StrEnum):
    """The rows a metric is computed over: what "one" of them is (one request, one trace)."""

    LLM_CALLS = "llm_calls"  # spans that call a model (the stored `llm_call` flag)
    TRACES = "traces"  # one row per trace, its whole tree
    SPANS = "spans"  # every span
    TOOL_CALLS = "tool_calls"  # spans of operation execute_tool
    AGENT_RUNS = "agent_runs"  # spans of operation invoke_agent
    RETRIEVALS = "retrievals"  # spans of operation retrieval


# What one row of each subject is called (the Metrics page's subject picker).
SUBJECT_LABELS = {
    Subject.LLM_CALLS: "LLM calls (requests)",
    Subject.TRACES: "Traces",
    Subject.SPANS: "All spans",
    Subject.TOOL_CALLS: "Tool calls",
    Subject.AGENT_RUNS: "Agent runs",
    Subject.RETRIEVALS: "Retrievals",
}


def _operation_is(name: str) -> Columns:
    return lambda c: c.operation == name


# The spans of each span subject, as a condition over span-shaped columns: the spans table and
# the rollup tables alike (both carry `llm_call` and `operation`), so the raw path and the
# rollup path restrict rows the same way. None: every span. A subject missing here (traces)
# is not one of spans; the span engines refuse it.
SUBJECT_ROWS: dict[Subject, Callable[[object], ColumnElement] | None] = {
    Subject.SPANS: None,
    Subject.LLM_CALLS: lambda c: c.llm_call == true(),
    Subject.TOOL_CALLS: _operation_is("execute_tool"),
    Subject.AGENT_RUNS: _operation_is("invoke_agent"),
    Subject.RETRIEVALS: _operation_is("retrieval"),
}


def subject_condition(subject: Subject, c: object) -> ColumnElement | None:
    """The condition selecting `subject`'s rows among the columns `c` (None: every row)."""
    if subject not in SUBJECT_ROWS:
        raise ValueError(f"{subject.value}: not a subject of spans; the span engines refuse it.")
    rows = SUBJECT_ROWS[subject]
    return rows(c) if rows is not None else None


# A trace metric's expression reads one row per trace with these columns (the metrics engine
# builds them from spans, or from `trace_totals` where the filter allows; docs/metrics.md):
TRACE_COLUMNS = {
    "first_start": "when its first span started (the trace's bucket)",
    "last_end": "when its last span ended",
    "duration_ms": "end-to-end latency: first start to last end, in ms",
    "span_count": "how many spans it has",
    "error_count": "how many of its spans failed",
    "total_cost_usd": "the cost of all its spans (0 when none is priced)",
    "total_tokens": "the tokens of all its spans (0 when none has any)",
}


class Kind(StrEnum):
    """How the subject's rows become a figure; `Metric.expression` means what the kind says."""

    ROWS = "rows"  # how many rows: the expression is a condition (None: every row)
    SHARE = "share"  # the share (0-1) of rows where the condition holds, as `avg`
    DISTINCT = "distinct"  # how many distinct non-NULL values the expression takes
    VALUE = "value"  # a number per row (NULL: none), aggregated as asked


# The partial columns a rollup keeps of each value measure (`{measure}_{part}`); sumsq is the
# sum of squares, for standard deviations and the Overview's noise tests.
MEASURE_PARTS = ("count", "sum", "min", "max", "sumsq")

Columns = Callable[[object], ColumnElement]  # a span-shaped column collection -> an expression


@dataclass(frozen=True)
class Partials:
    """Where rollup rows keep a metric, and so how its value is finished from merged rows.

    ROWS: `column` holds the count; the metric that first names it is the one the rollup
    writer fills it from. SHARE: `column` counts the rows of the condition (or, with
    `complement`, the other rows) out of `of`, the count of all the subject's rows. VALUE:
    `column` is the measure: its `MEASURE_PARTS` columns, filled from the first metric naming
    it; `layout` is its place among the tables' measure columns (migration 0009 put the most
    read first; a new measure takes the next number); `sketch`: the rollups' latency sketch
    holds its distribution, so percentiles can come from rollups (one metric only).
    """

    column: str
    of: str | None = None
    complement: bool = False
    layout: int | None = None
    sketch: bool = False


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str  # count, ratio, ms, tokens, usd, tokens/s, score, users
    subject: Subject
    kind: Kind
    aggregations: tuple[Agg, ...]
    expression: Columns | None = None  # see `Kind`; a function of a column collection
    rollup: Partials | None = None  # None: only raw spans can answer
    # the span fields it is computed from, where a role may not see them all (see
    # `semantic.fields` needs): a series of a hidden field is refused for that role
    reads: tuple[str, ...] = ()

    @property
    def cost(self) -> bool:
        """Computed from a cost field: only roles with costs:read may chart it."""
        return any(FIELD_NEEDS.get(f) == Permission.COSTS_READ for f in self.reads)

    def default_agg(self) -> Agg:
        return Agg.P95 if self.unit == "ms" else self.aggregations[0]

    def check(self) -> None:
        """Refuse a declaration the engines could not compute (a programming error)."""
        problem = None
        if self.kind in (Kind.DISTINCT, Kind.VALUE, Kind.SHARE) and self.expression is None:
            problem = "needs an expression"
        elif self.kind == Kind.DISTINCT and self.rollup is not None:
            problem = "is a distinct count: rollup rows cannot be summed into one"
        elif self.kind == Kind.SHARE and self.rollup is not None and self.rollup.of is None:
            problem = "is a share: its partials need `of`, the count of all rows"
        elif self.kind == Kind.VALUE and self.rollup is not None and self.rollup.layout is None:
            problem = "has a rollup measure without a `layout` place"
        elif self.subject == Subject.TRACES and self.rollup is not None:
            problem = "is over traces: trace_totals answers it, not the span rollups' partials"
        elif self.kind == Kind.DISTINCT and self.subject == Subject.TRACES:
            problem = "is over traces: count traces (ROWS), not distinct values among them"
        elif self.kind != Kind.VALUE and any(a != self.aggregations[0] for a in self.aggregations):
            problem = "is a count or a share: it has one aggregation"
        if problem:
            raise ValueError(f"Metric {self.name!r} {problem}.")


def _is_error(c) -> ColumnElement:
    return c.status == "error"


def _tokens_per_second(c) -> ColumnElement:
    """Output tokens per second of generation: over the time after the first token where the
    time to first token is known and leaves some (a TTFT at or past the end: the answer came
    in one piece), else over the whole call; no value for a call without output tokens or
    without a duration (docs/metrics.md, "Output tokens per second")."""
    produced = and_(c.output_tokens > 0, c.duration_ms > 0)
    generating = and_(c.ttft_ms.is_not(None), c.ttft_ms >= 0, c.ttft_ms < c.duration_ms)
    return case(
        (and_(produced, generating), c.output_tokens * 1000.0 / (c.duration_ms - c.ttft_ms)),
        (produced, c.output_tokens * 1000.0 / c.duration_ms),
    )


def _value(
    name: str,
    label: str,
    unit: str,
    measure: str,
    layout: int,
    *,
    expression: Columns | None = None,
    sketch: bool = False,
    reads: tuple[str, ...] = (),
    subject: Subject = Subject.LLM_CALLS,
) -> Metric:
    """A number per row of `subject` (its own column unless `expression` says otherwise),
    aggregated every way, kept by the rollups as `measure`."""
    return Metric(
        name,
        label,
        unit,
        subject,
        Kind.VALUE,
        VALUE_AGGS,
        expression or (lambda c: c[name]),
        Partials(measure, layout=layout, sketch=sketch),
        reads=reads,
    )


def _per_operation(subject: Subject, stem: str, noun: str) -> tuple[Metric, ...]:
    """Count, error rate and latency of one operation's spans (tool calls, agent runs,
    retrievals): the rollups' span and error counts and latency measure, restricted to the
    operation by the subject (rollup rows carry the operation)."""
    return (
        Metric(
            f"{stem}_count",
            noun,
            "count",
            subject,
            Kind.ROWS,
            (Agg.COUNT,),
            rollup=Partials("span_count"),
        ),
        Metric(
            f"{stem}_error_rate",
            f"{noun}: error rate",
            "ratio",
            subject,
            Kind.SHARE,
            (Agg.AVG,),
            _is_error,
            Partials("error_count", of="span_count"),
        ),
        _value(
            f"{stem}_duration_ms",
            f"{noun}: latency (ms)",
            "ms",
            "duration",
            0,
            expression=lambda c: c.duration_ms,
            sketch=True,
            subject=subject,
        ),
    )


# Each metric's subject is the rows it is computed over (docs/metrics.md): requests, errors,
# latency, tokens, cost and throughput over LLM calls (a span that calls a model, decided at
# ingest: ingest/llm_calls.py); span_count over every span; tool calls, agent runs and retrievals
# over their operation's spans. The engines restrict rows by `SUBJECT_ROWS`, nothing else.
# Trace metrics (subject TRACES) are answered by `metrics/trace_path.py`.
# Order: the order of the Metrics page's choices. Rollup layouts keep migration 0009's columns.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "request_count",
            "Requests",
            "count",
            Subject.LLM_CALLS,
            Kind.ROWS,
            (Agg.COUNT,),
            rollup=Partials("span_count"),
        ),
        Metric(
            "error_count",
            "Errors",
            "count",
            Subject.LLM_CALLS,
            Kind.ROWS,
            (Agg.COUNT,),
            _is_error,
            Partials("error_count"),
        ),
        Metric(
            "error_rate",
            "Error rate",
            "ratio",
            Subject.LLM_CALLS,
            Kind.SHARE,
            (Agg.AVG,),
            _is_error,
            Partials("error_count", of="span_count"),
        ),
        Metric(
            "success_rate",
            "Success rate",
            "ratio",
            Subject.LLM_CALLS,
            Kind.SHARE,
            (Agg.AVG,),
            lambda c: c.status != "error",
            Partials("error_count", of="span_count", complement=True),
        ),
        _value("duration_ms", "Latency (ms)", "ms", "duration", 0, sketch=True),
        _value("ttft_ms", "Time to first token (ms)", "ms", "ttft", 7),
        _value("input_tokens", "Input tokens", "tokens", "input_tokens", 3),
        _value("output_tokens", "Output tokens", "tokens", "output_tokens", 4),
        _value("total_tokens", "Total tokens", "tokens", "total_tokens", 2),
        _value(
            "input_cost",
            "Input cost (USD)",
            "usd",
            "input_cost",
            5,
            expression=lambda c: c.input_cost_usd,
            reads=("input_cost_usd",),
        ),
        _value(
            "output_cost",
            "Output cost (USD)",
            "usd",
            "output_cost",
            6,
            expression=lambda c: c.output_cost_usd,
            reads=("output_cost_usd",),
        ),
        _value(
            "total_cost",
            "Cost (USD)",
            "usd",
            "total_cost",
            1,
            expression=lambda c: c.total_cost_usd,
            reads=("total_cost_usd",),
        ),
        _value(
            "tokens_per_second",
            "Output tokens per second",
            "tokens/s",
            "tps",
            8,
            expression=_tokens_per_second,
        ),
        Metric(
            "unique_users",
            "Unique users",
            "users",
            Subject.SPANS,
            Kind.DISTINCT,
            (Agg.COUNT,),
            lambda c: c.user_id,
        ),
        _value("quality_score", "Quality score", "score", "quality", 9, subject=Subject.SPANS),
        # Over traces: one row per trace, the columns of `TRACE_COLUMNS` (docs/metrics.md,
        # "Trace metrics"); the first is Home's and the Overview's "Traces".
        Metric("trace_count", "Traces", "count", Subject.TRACES, Kind.ROWS, (Agg.COUNT,)),
        Metric(
            "trace_error_rate",
            "Trace error rate",
            "ratio",
            Subject.TRACES,
            Kind.SHARE,
            (Agg.AVG,),
            lambda c: c.error_count > 0,  # a trace with any failed span
        ),
        Metric(
            "trace_duration_ms",
            "End-to-end latency (ms)",
            "ms",
            Subject.TRACES,
            Kind.VALUE,
            VALUE_AGGS,
            lambda c: c.duration_ms,  # first start to last end
        ),
        Metric(
            "trace_cost",
            "Cost per trace (USD)",
            "usd",
            Subject.TRACES,
            Kind.VALUE,
            VALUE_AGGS,
            lambda c: c.total_cost_usd,
            reads=("total_cost_usd",),
        ),
        Metric(
            "trace_tokens",
            "Tokens per trace",
            "tokens",
            Subject.TRACES,
            Kind.VALUE,
            VALUE_AGGS,
            lambda c: c.total_tokens,
            reads=("total_tokens",),
        ),
        Metric(
            "span_count",
            "Spans",
            "count",
            Subject.SPANS,
            Kind.ROWS,
            (Agg.COUNT,),
            rollup=Partials("span_count"),
        ),
        *_per_operation(Subject.TOOL_CALLS, "tool_call", "Tool calls"),
        *_per_operation(Subject.AGENT_RUNS, "agent_run", "Agent runs"),
        *_per_operation(Subject.RETRIEVALS, "retrieval", "Retrievals"),
    )
}
for _m in METRICS.values():
    _m.check()


def sample_series(series: str) -> str:
    """The count of rows a series is computed over (e.g. an alert's minimum sample): the first
    unconditional count of its metric's subject ("request_count.count" for LLM calls), or of
    every span when its subject declares none."""
    subject = METRICS[series.split(".")[0]].subject
    for m in METRICS.values():
        if m.subject is subject and m.kind == Kind.ROWS and m.expression is None:
            return f"{m.name}.{Agg.COUNT.value}"
    return "span_count.count"


def rollup_counts() -> dict[str, Metric]:
    """The rollup tables' count columns, each with the metric whose condition fills it."""
    out: dict[str, Metric] = {}
    for m in METRICS.values():
        if m.kind == Kind.ROWS and m.rollup is not None:
            out.setdefault(m.rollup.column, m)
    return out


def rollup_measures() -> dict[str, Metric]:
    """The rollup tables' value measures in their column order, each with the metric whose
    expression fills it."""
    out: dict[str, Metric] = {}
    for m in METRICS.values():
        if m.kind == Kind.VALUE and m.rollup is not None:
            out.setdefault(m.rollup.column, m)
    return dict(sorted(out.items(), key=lambda item: item[1].rollup.layout))


def sketched() -> Metric:
    """The metric whose distribution the rollups' latency sketch holds (the first to declare
    it; others may read the same measure's sketch over another subject)."""
    metrics = [m for m in METRICS.values() if m.rollup is not None and m.rollup.sketch]
    (measure,) = {m.rollup.column for m in metrics}  # one sketch: one measure
    return metrics[0]


def metrics_markdown() -> str:
    """The table of docs/metrics.md (checked by tests/semantic/test_metrics_doc.py)."""
    lines = [
        "| Metric | Label | Subject | Unit | Aggregations | Computed from | Needs |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in METRICS.values():
        aggs = ", ".join(a.value for a in m.aggregations)
        if m.subject == Subject.TRACES:
            source = "traces (`trace_totals` for time and project filters)"
        elif m.rollup is None:
            source = "raw spans only"
        elif m.kind == Kind.VALUE:
            sketch = ", latency sketch" if m.rollup.sketch else "; percentiles from raw spans"
            source = f"rollups (`{m.rollup.column}_*`{sketch})"
        else:
            columns = ", ".join(f"`{c}`" for c in (m.rollup.column, m.rollup.of) if c)
            source = f"rollups ({columns})"
        needs = ", ".join(sorted({FIELD_NEEDS[f].value for f in m.reads if f in FIELD_NEEDS}))
        lines.append(
            f"| `{m.name}` | {m.label} | {m.subject.value} | {m.unit} | {aggs} | {source} | "
            f"{needs or '-'} |"
        )
    return "\n".join(lines) + "\n"
