"""The models the routes validate with; the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from observatory_core.exports.writers import FORMATS
from observatory_core.semantic.field_declaration import FilterKind
from observatory_core.semantic.field_lookups import filter_keys


class Meta(BaseModel):
    request_id: str = Field(
        description="Echoes X-Request-Id when sent; quote it when asking for help."
    )
    execution_ms: float = Field(description="Time spent in the server, in milliseconds.")
    cached: bool = Field(
        description="True when the answer came from the server's short-lived cache."
    )


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Stable: bad_request, unauthorized, forbidden, not_found, conflict, rate_limited."
    )
    message: str = Field(description="What is wrong and what to do about it.")


class ErrorBody(BaseModel):
    error: ErrorDetail
    meta: Meta


class _TimeParams(BaseModel):
    relative: str | None = Field(
        None, description="15m to 365d, e.g. 24h or 7d; 'all' for no time limit. Default 24h."
    )
    start: str | None = Field(
        None, description="ISO 8601 with a time zone, e.g. 2026-11-01T00:00:00Z"
    )
    end: str | None = Field(None, description="ISO 8601 with a time zone; exclusive")


def filter_params_model() -> type[BaseModel]:
    """Every `FilterSpec` key, named as in the app's shareable links: the time window and each
    declared filter (`semantic.fields`), built when asked so a field registered at run time
    is in it. (Unknown parameters are refused by the route, which also knows its own.)"""
    params: dict[str, Any] = {}
    for key, field in filter_keys().items():
        extra = {"description": field.description} if field.description else {}
        if field.filter in (FilterKind.RANGE, FilterKind.SEARCH):
            params[key] = (str | None, Field(None, **extra))
        else:
            params[key] = (list[str], Field([], **extra))
    return create_model("FilterParams", __base__=_TimeParams, **params)


FilterParams = filter_params_model()  # as declared at import; the app rebuilds it when created


class SpanPage(BaseModel):
    data: list[dict[str, Any]]
    next_cursor: str | None = Field(
        description="Pass as cursor= for the next page; null on the last."
    )
    total: int | None = Field(description="Only when count=true was asked for.")
    meta: Meta


class TraceDays(BaseModel):
    data: list[dict[str, Any]] = Field(
        description="Per local day of tz, newest first: day (the local date), start and end "
        "(UTC; start_local and end_local with their offset when tz is given), rows (spans, or "
        "traces by their root's start), error_count, p95_duration_ms, and total_cost_usd when "
        "the role may see costs."
    )
    mode: str
    zone: str
    total: int = Field(description="Rows over every day: the list's total.")
    meta: Meta


class TraceOut(BaseModel):
    trace_id: str
    start: datetime
    end: datetime
    duration_ms: float
    total_cost_usd: float | None
    total_tokens: int
    error_count: int
    span_count: int = Field(
        description="Spans in the trace; `spans` holds at most the first 2,000."
    )
    spans: list[dict[str, Any]] = Field(description="Depth-first, each with its depth in the tree.")


class TraceBody(BaseModel):
    data: TraceOut
    meta: Meta


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


class ContributionOut(BaseModel):
    value: Any = Field(
        description='The group\'s value; null: rows without one; "(other)": the rest.'
    )
    groups: int = Field(description="How many values the row stands for (more for (other)).")
    before: float | None = Field(description="The value's own figure before (null: not seen).")
    after: float | None
    weight_before: float | None = Field(
        description="Its share of the rows a ratio or an average is over (null for sums)."
    )
    weight_after: float | None
    change: float = Field(description="Its part of the total change (mix + rate).")
    mix: float | None = Field(description="Part from its share of the rows moving (null for sums).")
    rate: float | None = Field(description="Part from its own figure moving (null for sums).")
    z: float | None = Field(description="The noise test on its own figure; |z| >= 1.96 is marked.")
    significant: bool


class ChangeOut(BaseModel):
    series: str
    label: str
    unit: str
    dimension: str
    method: str = Field(description="difference (sums) or shift-share (ratios and averages)")
    before_start: datetime
    before_end: datetime
    after_start: datetime
    after_end: datetime
    before_start_local: str | None = Field(None, description="With tz: before_start in tz")
    before_end_local: str | None = Field(None, description="With tz: before_end in tz")
    after_start_local: str | None = Field(None, description="With tz: after_start in tz")
    after_end_local: str | None = Field(None, description="With tz: after_end in tz")
    before: float | None
    after: float | None
    change: float | None
    groups: int = Field(
        description="Values seen in either period; past `top` they fold into (other)."
    )
    source: str
    contributions: list[ContributionOut]


class ChangeBody(BaseModel):
    data: ChangeOut
    meta: Meta


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filters: dict[str, Any] = Field(default_factory=dict, description="A FilterSpec as JSON.")
    format: Literal[tuple(FORMATS)] = "csv"  # type: ignore[valid-type]
    compression: Literal["gzip", "zstd", "snappy", "none"] = Field(
        "gzip",
        description="gzip or none for CSV/JSON/JSONL; zstd, snappy, gzip or none for Parquet",
    )
    fields: list[str] | None = Field(
        None, description="Span fields; default: the export's default set"
    )
    row_limit: int = Field(1_000_000, ge=1, le=1_000_000)
    tz: str | None = Field(
        None,
        max_length=64,
        description="An IANA time zone: each time column is followed by `<name>_local`, the "
        "same instant in that zone with its offset. Default: UTC columns only.",
    )


class ExportJob(BaseModel):
    id: int
    status: str
    format: str
    compression: str
    fields: list[str]
    row_limit: int
    progress: float
    rows_written: int
    file_size: int | None
    checksum_sha256: str | None
    error_message: str | None
    attempts: int = Field(0, description="Runs so far: over 1 after a takeover or a retry")
    schedule_id: int | None = Field(
        None, description="The repeating export this job is a run of (/export/schedules)"
    )
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    filters: dict[str, Any]
    download_refused: str | None = Field(
        None,
        description="Why the key's role may not download this file (a column or filter on a "
        "field it may not see); null when it may.",
    )


class ExportBody(BaseModel):
    data: ExportJob
    meta: Meta


class ExportList(BaseModel):
    data: list[ExportJob]
    meta: Meta


class ScheduleIn(ExportIn):
    """An export's body plus when it repeats; each run checks it with the key's role then."""

    cadence: Literal["daily", "weekly", "monthly"] = Field(
        description="Each run exports the previous full day, week (from Monday) or month of tz"
    )
    tz: str = Field(  # type: ignore[assignment]
        "UTC",
        max_length=64,
        description="The IANA time zone whose midnights bound the periods; also the zone of "
        "the files' local time columns. The filters' time window is ignored.",
    )
    name: str = Field("", max_length=100, description="Default: the cadence and format")
    webhook_url: str | None = Field(
        None,
        max_length=500,
        description="POSTed a JSON body (Slack-compatible text, and `export` with the job id "
        "and its download_url) when each run's file is ready",
    )


class SchedulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(description="false pauses; true resumes from the next period's end")


class Schedule(BaseModel):
    id: int
    name: str
    owner: str
    cadence: str
    time_zone: str
    format: str
    compression: str
    fields: list[str] | None
    row_limit: int
    filters: dict[str, Any]
    enabled: bool
    next_run_at: datetime = Field(description="When the next run starts (UTC)")
    last_job_id: int | None
    last_error: str | None
    has_webhook: bool
    webhook_url: str | None = Field(
        None, description="Shown to those who may change the schedule (its owner, admins)"
    )
    may_manage: bool
    created_at: datetime


class ScheduleBody(BaseModel):
    data: Schedule
    meta: Meta


class ScheduleList(BaseModel):
    data: list[Schedule]
    meta: Meta


class UserRow(BaseModel):
    user_id: str
    request_count: int = Field(description="The user's LLM calls (requests) the filter selects.")
    total_cost_usd: float | None = Field(
        None, description="Cost of those LLM calls; left out for roles without costs:read."
    )
    total_tokens: int = Field(description="Tokens of those LLM calls.")
    error_count: int = Field(description="Those LLM calls that failed.")
    trace_count: int = Field(description="Traces holding one of the user's matching spans.")
    first_seen: datetime
    last_seen: datetime


class GroupPageMeta(BaseModel):
    total: int = Field(description="How many match, over every page.")
    next_offset: int | None = Field(
        description="Pass as offset= for the next page; null on the last."
    )
    meta: Meta


class UserPage(GroupPageMeta):
    data: list[UserRow]


class SessionRow(BaseModel):
    session_id: str
    user_id: str | None = Field(description="Its user (the lowest id when its spans name several).")
    trace_count: int = Field(description="Traces holding one of the session's matching spans.")
    first_seen: datetime = Field(description="The first span start among those traces.")
    last_seen: datetime = Field(description="The last span end among those traces.")
    duration_ms: float
    total_cost_usd: float | None = Field(
        None, description="Over those traces' whole trees; left out without costs:read."
    )
    error_count: int


class SessionPage(GroupPageMeta):
    data: list[SessionRow]


class SessionTurn(BaseModel):
    trace_id: str
    name: str | None = Field(description="The root span's name (null while no root arrived).")
    user_id: str | None
    first_start: datetime
    duration_ms: float
    span_count: int
    error_count: int
    total_tokens: int
    total_cost_usd: float | None = Field(None, description="Left out without costs:read.")
    input_text: str | None = Field(
        None,
        description="The root's input, else the first LLM call's; left out without traces:read.",
    )
    output_text: str | None = Field(
        None,
        description="The root's output, else the last LLM call's; left out without traces:read.",
    )


class SessionOut(BaseModel):
    session_id: str
    trace_count: int = Field(description="Every trace of the session; `turns` holds the first 200.")
    first_seen: datetime
    last_seen: datetime
    duration_ms: float
    total_cost_usd: float | None
    users: list[str]
    turns: list[SessionTurn] = Field(description="Its traces by first start, as a conversation.")


class SessionBody(BaseModel):
    data: SessionOut
    meta: Meta


class DashboardIn(BaseModel):
    """A dashboard's definition: the JSON an export downloads (GET /dashboards/{id} answers it
    under `data.dashboard`), so a file kept in version control is posted back as it is."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(1, description="The definition's format; this server reads 1.")
    name: str = Field(description="Unique within the org, at most 100 characters.")
    description: str = ""
    filters: dict[str, Any] = Field(
        default_factory=dict,
        description='The period and filters it opens with, as in links: {"relative": "7d", '
        '"models": ["gpt-4o"]}. The page\'s period and filters apply to every chart.',
    )
    columns: int = Field(2, description="Grid columns, 1 to 4.")
    charts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Each: title, kind (line, area, bar, table, number, pie), series "
        "(metric.aggregation, as /metrics takes), bucket (auto, 1min, 5min, 1hour, 1day, 1week, "
        "none), group_by (list), top (1-10 groups), filters (its own, no time window), width "
        "(grid columns it spans).",
    )


class DashboardOut(BaseModel):
    id: int
    name: str
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    dashboard: dict[str, Any] = Field(description="The definition, as POST and PUT take it.")


class DashboardBody(BaseModel):
    data: DashboardOut
    meta: Meta


class DashboardSummary(BaseModel):
    id: int
    name: str
    description: str
    charts: int = Field(description="How many charts it holds.")
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class DashboardList(BaseModel):
    data: list[DashboardSummary]
    meta: Meta
