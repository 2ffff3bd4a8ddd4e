"""GET /traces and GET /traces/{trace_id}: the explorer's list and detail."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from observatory_core.accounts.scope import Scope
from observatory_core.api.common import (
    FILTER_PARAMETERS,
    TZ_DESCRIPTION,
    FastJSON,
    errors,
    filter_spec,
    with_local_times,
    zone_of,
)
from observatory_core.api.context import ApiError, caller, meta, span_engine
from observatory_core.api.trace_schemas import SpanPage, TraceBody, TraceDays
from observatory_core.traces.days import list_days
from observatory_core.traces.detail import get_trace
from observatory_core.traces.query import MAX_PAGE, list_spans

router = APIRouter(tags=["traces"])
TraceId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="32 lowercase hex digits")]
OWN = frozenset({"mode", "sort", "direction", "limit", "cursor", "fields", "count", "tz"})
TIMES = ("start_time", "end_time")
DAYS_OWN = frozenset({"mode", "tz"})


@router.get(
    "/traces", response_model=SpanPage, responses=errors(400, 403), openapi_extra=FILTER_PARAMETERS
)
def list_traces(
    request: Request,
    scope: Annotated[Scope, Depends(caller)],
    mode: Literal["spans", "traces"] = "spans",
    sort: Literal["start_time", "duration_ms", "total_cost_usd", "total_tokens"] = "start_time",
    direction: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
    fields: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    count: bool = False,
    tz: Annotated[str | None, Query(max_length=64, description=TZ_DESCRIPTION)] = None,
) -> FastJSON:
    """One page of spans (or of whole traces by their root), newest first by default; every
    filter of the Traces page applies. Pass `next_cursor` back as `cursor` for the next page."""
    spec = filter_spec(request, OWN)
    zone = zone_of(tz) if tz is not None else None
    page = list_spans(
        span_engine(),
        scope,
        spec,
        mode=mode,
        sort=sort,
        direction=direction,
        limit=limit,
        cursor=cursor,
        fields=fields or None,
        count=count,
    )
    rows = with_local_times(page.rows, zone, TIMES)
    body = {"data": rows, "next_cursor": page.next_cursor, "total": page.total}
    return FastJSON({**body, "meta": meta(request)})


@router.get(
    "/traces/days",
    response_model=TraceDays,
    responses=errors(400, 403),
    openapi_extra=FILTER_PARAMETERS,
)
def trace_days(
    request: Request,
    scope: Annotated[Scope, Depends(caller)],
    mode: Literal["spans", "traces"] = "spans",
    tz: Annotated[str | None, Query(max_length=64, description=TZ_DESCRIPTION)] = None,
) -> FastJSON:
    """The /traces list (the same filters and mode) grouped by the local days of `tz`: per day
    its rows, cost, errors and p95 latency. A day's start and end, sent back as start= and
    end=, list that day's rows."""
    spec = filter_spec(request, DAYS_OWN)
    zone = zone_of(tz)
    days = list_days(span_engine(), scope, spec, mode=mode, zone=zone)
    rows = with_local_times(days.days, zone if tz is not None else None, ("start", "end"))
    body = {"data": rows, "mode": mode, "zone": zone.name, "total": days.total}
    return FastJSON({**body, "meta": meta(request)})


@router.get("/traces/{trace_id}", response_model=TraceBody, responses=errors(400, 403, 404))
def one_trace(
    request: Request,
    trace_id: TraceId,
    scope: Annotated[Scope, Depends(caller)],
    tz: Annotated[str | None, Query(max_length=64, description=TZ_DESCRIPTION)] = None,
) -> FastJSON:
    """The trace's spans as a depth-first tree (the first 2,000 by start time; `span_count`
    says how many it has), with totals over all of them."""
    zone = zone_of(tz) if tz is not None else None
    trace = get_trace(span_engine(), scope, trace_id)
    if trace is None:
        raise ApiError(404, "not_found", f"No trace {trace_id} in your org.")
    data = {
        "trace_id": trace.trace_id,
        "start": trace.start,
        "end": trace.end,
        "duration_ms": trace.duration_ms,
        "total_cost_usd": trace.total_cost_usd,
        "total_tokens": trace.total_tokens,
        "error_count": trace.error_count,
        "span_count": trace.span_count,
        "spans": with_local_times(list(trace.spans), zone, TIMES),
    }
    with_local_times([data], zone, ("start", "end"))
    return FastJSON({"data": data, "meta": meta(request)})
