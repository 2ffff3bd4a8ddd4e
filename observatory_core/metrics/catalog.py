"""The metrics and aggregations (README "Metrics"), and which combinations make sense."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from observatory_core.accounts.permissions import Permission
from observatory_core.semantic.fields import (  # noqa: F401 (re-exported: declared with the fields)
    DIMENSION_FIELDS,
    DIMENSIONS,
    FIELD_NEEDS,
    ROLLUP_GROUPS,
)


class Agg(StrEnum):
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    STDDEV = "stddev"  # sample standard deviation; beyond DESIGN's nine, for spread at a glance
    P50 = "p50"
    P90 = "p90"
    P95 = "p95"
    P99 = "p99"


PERCENTILES = {Agg.P50: 0.5, Agg.P90: 0.9, Agg.P95: 0.95, Agg.P99: 0.99}
_ALL = tuple(Agg)
_VALUE_AGGS = _ALL  # count (of spans with a value), sum, avg, min, max, percentiles


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str  # count, ratio, ms, tokens, usd, tokens/s, score, users
    aggregations: tuple[Agg, ...]
    # the rollup measure holding it (None: a count/ratio from span and error counts, or raw only)
    measure: str | None = None
    rollup: bool = True  # False: only raw spans can answer (distinct users)
    # the span fields it is computed from, where a role may not see them all (see
    # `semantic.fields`): a series of a hidden field is refused for that role
    reads: tuple[str, ...] = ()

    @property
    def cost(self) -> bool:
        """Computed from a cost field: only roles with costs:read may chart it."""
        return any(FIELD_NEEDS.get(f) == Permission.COSTS_READ for f in self.reads)

    def default_agg(self) -> Agg:
        return Agg.P95 if self.unit == "ms" else self.aggregations[0]


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("request_count", "Requests", "count", (Agg.COUNT,)),
        Metric("error_count", "Errors", "count", (Agg.COUNT,)),
        # a rate is the average of a 0/1 indicator over the requests
        Metric("error_rate", "Error rate", "ratio", (Agg.AVG,)),
        Metric("success_rate", "Success rate", "ratio", (Agg.AVG,)),
        Metric("duration_ms", "Latency (ms)", "ms", _VALUE_AGGS, "duration"),
        Metric("ttft_ms", "Time to first token (ms)", "ms", _VALUE_AGGS, "ttft"),
        Metric("input_tokens", "Input tokens", "tokens", _VALUE_AGGS, "input_tokens"),
        Metric("output_tokens", "Output tokens", "tokens", _VALUE_AGGS, "output_tokens"),
        Metric("total_tokens", "Total tokens", "tokens", _VALUE_AGGS, "total_tokens"),
        Metric(
            "input_cost",
            "Input cost (USD)",
            "usd",
            _VALUE_AGGS,
            "input_cost",
            reads=("input_cost_usd",),
        ),
        Metric(
            "output_cost",
            "Output cost (USD)",
            "usd",
            _VALUE_AGGS,
            "output_cost",
            reads=("output_cost_usd",),
        ),
        Metric(
            "total_cost", "Cost (USD)", "usd", _VALUE_AGGS, "total_cost", reads=("total_cost_usd",)
        ),
        Metric("tokens_per_second", "Output tokens per second", "tokens/s", _VALUE_AGGS, "tps"),
        Metric("unique_users", "Unique users", "users", (Agg.COUNT,), rollup=False),
        Metric("quality_score", "Quality score", "score", _VALUE_AGGS, "quality"),
    )
}

# Aggregations whose empty bucket is a zero; the others leave a gap.
ZERO_WHEN_EMPTY = {Agg.COUNT, Agg.SUM}

# Group-by dimensions (DIMENSIONS), the span field each groups by (DIMENSION_FIELDS) and the
# ones rollups carry (ROLLUP_GROUPS) are declared with the fields (`semantic.fields`).
MAX_GROUP_BY = 5

BUCKETS = {"1min": 60, "5min": 300, "1hour": 3600, "1day": 86400}
# The longest range each bucket size may chart (keeps a series to at most ~1,500 points).
MAX_RANGE_DAYS = {"1min": 1, "5min": 5, "1hour": 62, "1day": 1100}
# "auto": the smallest bucket whose range fits in this many points.
AUTO_POINTS = 750
