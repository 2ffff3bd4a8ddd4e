"""GET /metrics, GET /metrics/summary and POST /metrics/query: the Metrics and Overview pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import polars as pl
from fastapi import APIRouter, Depends, Query, Request, Response

from observatory_core.accounts.scope import Scope
from observatory_core.api.common import (
    FILTER_PARAMETERS,
    TZ_DESCRIPTION,
    cache,
    errors,
    filter_spec,
    zone_of,
)
from observatory_core.api.context import caller, engine, meta
from observatory_core.api.schemas import MetricsBody, MetricsQueryIn, SummaryBody
from observatory_core.base.zones import Zone, calendar_period
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS
from observatory_core.metrics.engine import MetricResult, run_metrics
from observatory_core.metrics.query import Having, MetricQuery
from observatory_core.reports.overview import period_overview

router = APIRouter(tags=["metrics"])
# Answers kept in the 15-second cache only up to this many rows: a few large ones held there
# grew the server by a gigabyte under the bounded-reads grid (they are kept as JSON text now).
CACHED_ROWS = 5000
BUCKET_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # as the response model writes a UTC time
LOCAL_FORMAT = "%Y-%m-%dT%H:%M:%S%:z"  # as `Zone.iso` writes a local one


def _rows_json(result: MetricResult, local: bool) -> str:
    """The rows as one JSON array, written by polars: a 35k-row answer took ~0.5 s as Python
    dicts through the response model, several times the query. Each bucket also in the query's
    zone (`bucket_local`) when the caller named one; a bucket that is not whole says so
    (`partial`, `covered_seconds`), a whole bucket's row carries neither (docs/metrics.md)."""
    frame = result.frame
    if "bucket" not in frame.columns:
        return frame.write_json()
    bucket = pl.col("bucket")
    at = [bucket.dt.strftime(BUCKET_FORMAT)]
    if local:
        zoned = bucket.dt.convert_time_zone(result.zone.name).dt.strftime(LOCAL_FORMAT)
        at.append(zoned.alias("bucket_local"))
    frame = frame.with_columns(at)
    if local:  # right after the UTC bucket, as the rows read before
        names = [c for c in frame.columns if c != "bucket_local"]
        frame = frame.select(names[:1] + ["bucket_local"] + names[1:])
    covered = {b.strftime(BUCKET_FORMAT): c for b, c in result.partial_buckets.items()}
    if not covered or frame.is_empty():
        return frame.write_json()
    parts, offset = [], 0
    for run in frame["bucket"].is_in(list(covered)).rle().to_list():
        part = frame.slice(offset, run["len"])
        offset += run["len"]
        if run["value"]:
            seconds = bucket.replace_strict(covered, return_dtype=pl.Float64)
            part = part.with_columns(partial=pl.lit(True), covered_seconds=seconds)
        parts.append(part.write_json()[1:-1])
    return "[" + ",".join(parts) + "]"


def _metrics_data(scope: Scope, query: MetricQuery, local: bool) -> dict:
    """The answer's fields, its rows as JSON text (`rows_json`)."""
    result = run_metrics(engine(), scope, query)
    return {
        "series": list(result.series),
        "group_by": list(result.group_by),
        "bucket_seconds": result.bucket_seconds,
        "start": result.start,
        "end": result.end,
        "source": result.source,
        "exact_percentiles": result.exact_percentiles,
        "folded_groups": result.folded_groups,
        "partial_buckets": [
            {"bucket": bucket, "covered_seconds": covered}
            for bucket, covered in result.partial_buckets.items()
        ],
        "subjects": {s: METRICS[s.split(".")[0]].subject.value for s in result.series},
        "rows": [],
        "rows_json": _rows_json(result, local),
        "row_count": result.frame.height,
    }


ROWS_SLOT = '"rows":[]'


def _answer(request: Request, scope: Scope, query: MetricQuery, local: bool = False) -> Response:
    """The body checked by the response model without its rows, which go in as written.
    `local`: the caller named a zone, so rows carry `bucket_local` too."""
    key = cache.key(scope, "metrics", repr(query), local)
    data, hit = cache.get(key), True
    if data is None:
        data, hit = _metrics_data(scope, query, local), False
        if data["row_count"] <= CACHED_ROWS:
            cache.put(key, data)
    fields = {k: v for k, v in data.items() if k not in ("rows_json", "row_count")}
    body = MetricsBody.model_validate({"data": fields, "meta": meta(request, cached=hit)})
    text = body.model_dump_json()
    if text.count(ROWS_SLOT) != 1:  # never: the rows are the only list left empty
        raise RuntimeError("metrics answer: no single place for its rows")
    text = text.replace(ROWS_SLOT, '"rows":' + data["rows_json"])
    return Response(text, media_type="application/json")


@router.get(
    "/metrics",
    response_model=MetricsBody,
    responses=errors(400, 403),
    openapi_extra=FILTER_PARAMETERS,
)
def metrics(
    request: Request,
    scope: Annotated[Scope, Depends(caller)],
    series: Annotated[
        list[str], Query(min_length=1, max_length=20, description="e.g. duration_ms.p95")
    ],
    bucket: Annotated[
        str | None, Query(description="1min, 5min, 1hour, 1day or auto; 'none' for totals")
    ] = "auto",
    group_by: Annotated[list[str], Query(max_length=5)] = [],  # noqa: B006 - FastAPI copies defaults
    tz: Annotated[str | None, Query(max_length=64, description=TZ_DESCRIPTION)] = None,
) -> Response:
    """Series over time (or totals), grouped as asked, for the filtered spans; days, weeks and
    hours of the `tz` zone's clock."""
    spec = filter_spec(request, frozenset({"series", "bucket", "group_by", "tz"}))
    query = MetricQuery(
        series=tuple(series),
        filters=spec,
        bucket=None if bucket == "none" else bucket,
        group_by=tuple(group_by),
        zone=zone_of(tz),
    )
    return _answer(request, scope, query, local=tz is not None)


@router.post("/metrics/query", response_model=MetricsBody, responses=errors(400, 403))
def metrics_query(
    request: Request, body: MetricsQueryIn, scope: Annotated[Scope, Depends(caller)]
) -> Response:
    """The custom query: having (on group totals), sort and limit, as on the Metrics page."""
    query = MetricQuery(
        series=tuple(body.series),
        filters=FilterSpec.from_json(body.filters),
        bucket=body.bucket,
        group_by=tuple(body.group_by),
        having=tuple(Having(h.series, h.op, h.value) for h in body.having),
        sort=body.sort,
        descending=body.descending,
        limit=body.limit,
        zone=zone_of(body.tz),
    )
    return _answer(request, scope, query, local=body.tz is not None)


@router.get(
    "/metrics/summary",
    response_model=SummaryBody,
    responses=errors(400, 403),
    openapi_extra=FILTER_PARAMETERS,
)
def summary(
    request: Request,
    scope: Annotated[Scope, Depends(caller)],
    tz: Annotated[str | None, Query(max_length=64, description=TZ_DESCRIPTION)] = None,
    period: Annotated[
        Literal["today", "yesterday", "month"] | None,
        Query(
            description="A calendar period of the tz zone's clock (today, yesterday, this "
            "month), in place of the time filters."
        ),
    ] = None,
) -> dict:
    """The Overview's KPIs for the period against the one before, with the noise test."""
    spec = filter_spec(request, frozenset({"tz", "period"}))
    zone = zone_of(tz)
    if period is not None:
        start, end = calendar_period(period, zone, datetime.now(UTC))
        spec = spec.replace(relative=None, start=start, end=end)
    data, hit = cache.get_or_compute(
        cache.key(scope, "summary", spec.to_json(), zone.name),
        lambda: _summary_data(scope, spec, zone),
    )
    return {"data": data, "meta": meta(request, cached=hit)}


def _summary_data(scope: Scope, spec: FilterSpec, zone: Zone) -> dict:
    view = period_overview(engine(), scope, spec, zone=zone)
    kpis = [
        {
            "key": k.key,
            "label": k.label,
            "unit": k.unit,
            "current": k.current,
            "previous": k.previous,
            "change_pct": k.change_pct,
            "z": k.verdict.z,
            "significant": k.verdict.significant,
        }
        for k in view.kpis
    ]
    return {"start": view.start, "end": view.end, "source": view.source, "kpis": kpis}
