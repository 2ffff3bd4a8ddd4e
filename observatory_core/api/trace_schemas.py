"""The models of the explorer's routes (`traces.py`): a page of spans or traces, the traces per
day, a trace with its spans."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from observatory_core.api.schemas import Meta


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
