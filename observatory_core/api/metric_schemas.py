"""The models of the metrics routes (`metrics.py`): a query in, its rows out with the buckets
the range cuts short, and the summary's KPIs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from observatory_core.api.schemas import Meta


class PartialBucket(BaseModel):
    bucket: datetime = Field(description="The bucket's start (UTC).")
    covered_seconds: float = Field(
        description="How many seconds of the bucket the range covers and have passed: less "
        "than bucket_seconds (0 for a bucket still to come)."
    )


class MetricsOut(BaseModel):
    series: list[str]
    group_by: list[str]
    bucket_seconds: int | None = Field(
        description="The bucket's nominal width; a day or week of a zone with daylight saving "
        "may be an hour shorter or longer."
    )
    zone: str = Field("UTC", description="The time zone whose clock the buckets follow.")
    start: datetime | None
    end: datetime | None
    source: str = Field(description="raw or rollup")
    exact_percentiles: bool | None
    folded_groups: int = Field(
        0,
        description='Groups past the cap (settings: metrics_max_groups) folded into one "(other)" '
        "group; 0 when every group is its own row. A query with a limit keeps its top N instead.",
    )
    subjects: dict[str, str] = Field(
        default_factory=dict,
        description="What each series counts (docs/metrics.md, Subjects): llm_calls (the "
        "requests), spans, tool_calls, agent_runs, retrievals, traces.",
    )
    partial_buckets: list[PartialBucket] = Field(
        default_factory=list,
        description="The buckets that are not whole: the first when the range starts within "
        "one, the last when it ends within one or the bucket is still running. Their values "
        "count only the covered part; do not compare them with whole buckets. Empty for totals.",
    )
    filled: bool = Field(
        False,
        description="Whether every bucket of every group is a row (`fill=true`: zero for counts "
        "and sums where a bucket holds nothing, null otherwise) or only the buckets that hold "
        "data (the default: a bucket missing from a group's rows had no span of its subject).",
    )
    rows: list[dict[str, Any]] = Field(
        description="One per bucket and group (only the buckets with data unless `filled`; "
        "or one per group, for totals): `bucket` (its start, "
        "UTC) and, when tz is given, `bucket_local` (the same instant in the zone, with its "
        "offset), the "
        "group-by values and one value per series. A row of a partial bucket also carries "
        "`partial: true` and `covered_seconds`; a whole bucket's row carries neither."
    )


class MetricsBody(BaseModel):
    data: MetricsOut
    meta: Meta


class HavingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    series: str
    op: Literal[">", ">=", "<", "<=", "=", "!="]
    value: float


class MetricsQueryIn(BaseModel):
    """The custom query of the Metrics page: series, filters, buckets, groups, having, sort, limit."""

    model_config = ConfigDict(extra="forbid")
    series: list[str] = Field(
        min_length=1, max_length=20, examples=[["duration_ms.p95", "request_count.count"]]
    )
    filters: dict[str, Any] = Field(
        default_factory=dict,
        description="A FilterSpec as JSON (same fields as the query parameters).",
    )
    bucket: str | None = Field(
        "auto", description="1min, 5min, 1hour, 1day, 1week, auto, or null for totals"
    )
    tz: str | None = Field(
        None,
        max_length=64,
        description="An IANA time zone whose days, weeks and hours the buckets are (rows then "
        "also carry `bucket_local`). Default UTC.",
    )
    group_by: list[str] = Field(default_factory=list, max_length=5)
    having: list[HavingIn] = Field(default_factory=list, max_length=10)
    sort: str | None = None
    descending: bool = True
    limit: int | None = Field(None, ge=1, le=10_000)
    fill: bool = Field(
        False,
        description="Every bucket of every group, empty ones too, as a chart draws them (they "
        "count towards the cells cap either way); by default only the buckets with data.",
    )


class Kpi(BaseModel):
    key: str
    label: str
    unit: str
    current: float | None
    previous: float | None
    change_pct: float | None
    z: float | None = Field(description="The noise test's statistic; |z| >= 1.96 is beyond noise.")
    significant: bool


class SummaryOut(BaseModel):
    start: datetime
    end: datetime
    source: str
    kpis: list[Kpi]


class SummaryBody(BaseModel):
    data: SummaryOut
    meta: Meta
