"""GET /metrics, GET /metrics/summary and POST /metrics/query: the Metrics and Overview pages."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Literal

import polars as pl
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from observatory_core.accounts.scope import Scope
from observatory_core.api.common import (
    FILTER_PARAMETERS,
    TZ_DESCRIPTION,
    cache,
    errors,
    filter_spec,
    zone_of,
)
from observatory_core.api.context import caller, meta, span_engine
from observatory_core.api.metric_schemas import MetricsBody, MetricsQueryIn, SummaryBody
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


FILL_DESCRIPTION = (
    "true: every bucket of every group, the empty ones too, as a chart draws them (zero for "
    "counts and sums, null otherwise); false (default): only the buckets that hold data."
)
CHUNK_ROWS = 5000  # rows written at a time: a large answer is streamed, never held whole as text


def _rows_frame(result: MetricResult, local: bool) -> pl.DataFrame:
    """The rows as they are written: the bucket as UTC text, also in the query's zone
    (`bucket_local`) when the caller named one, and, when some bucket is not whole, `_covered`
    (its covered seconds; null for the whole ones)."""
    frame = result.frame
    if "bucket" not in frame.columns or not frame.height:  # no rows: nothing to write
        return frame
    bucket = pl.col("bucket")
    covered = {b.strftime(BUCKET_FORMAT): c for b, c in result.partial_buckets.items()}
    # Each bucket written once and looked up per row: an answer holds a few hundred buckets
    # over tens of thousands of rows (strftime per row took ~12 ms of a 60k-row answer).
    starts = frame["bucket"].unique()
    utc = starts.dt.strftime(BUCKET_FORMAT)
    at = [bucket.replace_strict(starts, utc, return_dtype=pl.Utf8)]
    if local:
        zoned = starts.dt.convert_time_zone(result.zone.name).dt.strftime(LOCAL_FORMAT)
        at.append(bucket.replace_strict(starts, zoned, return_dtype=pl.Utf8).alias("bucket_local"))
    frame = frame.with_columns(at)
    if local:  # right after the UTC bucket, as the rows read before
        names = [c for c in frame.columns if c != "bucket_local"]
        frame = frame.select(names[:1] + ["bucket_local"] + names[1:])
    if not covered:
        return frame
    seconds = bucket.replace_strict(covered, default=None, return_dtype=pl.Float64)
    return frame.with_columns(seconds.alias("_covered"))


def _json_rows(frame: pl.DataFrame) -> memoryview:
    """The rows as JSON objects joined by commas: polars' array without its brackets, written
    as bytes and sliced in place (no text to encode, no copy per slice)."""
    buffer = io.BytesIO()
    frame.write_json(buffer)
    return buffer.getbuffer()[1:-1]


def _row_chunks(frame: pl.DataFrame) -> Iterator[bytes | memoryview]:
    """The rows as JSON, `CHUNK_ROWS` at a time, written by polars: a 35k-row answer took ~0.5 s
    as Python dicts through the response model, several times the query. A bucket that is not
    whole says so (`partial`, `covered_seconds`); a whole bucket's row carries neither
    (docs/metrics.md)."""
    plain = "_covered" not in frame.columns or frame["_covered"].null_count() == frame.height
    for offset in range(0, frame.height, CHUNK_ROWS):
        chunk = frame.slice(offset, CHUNK_ROWS)
        if plain:
            yield _json_rows(chunk.drop("_covered", strict=False))
            continue
        parts, at = [], 0
        for run in chunk["_covered"].is_not_null().rle().to_list():
            part = chunk.slice(at, run["len"])
            at += run["len"]
            if run["value"]:
                part = part.with_columns(partial=pl.lit(True), covered_seconds=pl.col("_covered"))
            parts.append(_json_rows(part.drop("_covered")))
        yield b",".join(parts)


def _metrics_data(scope: Scope, query: MetricQuery, local: bool, fill: bool) -> dict:
    """The answer's fields; its rows (`frame`) are written when the answer is sent. Spans and
    rollups are read where they are kept (the span store's, when the setting names one)."""
    result = run_metrics(span_engine(), scope, query, fill=fill)
    return {
        "filled": fill and result.bucket_seconds is not None,
        "series": list(result.series),
        "group_by": list(result.group_by),
        "bucket_seconds": result.bucket_seconds,
        "zone": result.zone.name,
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
        "frame": _rows_frame(result, local),
    }


ROWS_SLOT = '"rows":[]'


def _body(head: str, frame: pl.DataFrame, tail: str) -> Iterator[bytes | memoryview]:
    yield (head + '"rows":[').encode()
    first = True
    for chunk in _row_chunks(frame):
        if chunk:
            if not first:
                yield b","
            yield chunk
            first = False
    yield ("]" + tail).encode()


def _answer(
    request: Request, scope: Scope, query: MetricQuery, local: bool = False, fill: bool = False
) -> Response:
    """The body checked by the response model without its rows, which are streamed in as
    polars writes them. `local`: the caller named a zone, so rows carry `bucket_local` too.
    `fill`: the empty buckets too (a chart's gap-fill), else only the buckets with data."""
    key = cache.key(scope, "metrics", repr(query), local, fill)
    data, hit = cache.get(key), True
    if data is None:
        data, hit = _metrics_data(scope, query, local, fill), False
        if data["frame"].height <= CACHED_ROWS:
            cache.put(key, data)
    fields = {k: v for k, v in data.items() if k != "frame"}
    body = MetricsBody.model_validate({"data": fields, "meta": meta(request, cached=hit)})
    head, slot, tail = body.model_dump_json().partition(ROWS_SLOT)
    if not slot:  # never: the rows are the only list left empty
        raise RuntimeError("metrics answer: no place for its rows")
    return StreamingResponse(_body(head, data["frame"], tail), media_type="application/json")


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
    fill: Annotated[bool, Query(description=FILL_DESCRIPTION)] = False,
) -> Response:
    """Series over time (or totals), grouped as asked, for the filtered spans; days, weeks and
    hours of the `tz` zone's clock."""
    spec = filter_spec(request, frozenset({"series", "bucket", "group_by", "tz", "fill"}))
    query = MetricQuery(
        series=tuple(series),
        filters=spec,
        bucket=None if bucket == "none" else bucket,
        group_by=tuple(group_by),
        zone=zone_of(tz),
    )
    return _answer(request, scope, query, local=tz is not None, fill=fill)


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
    return _answer(request, scope, query, local=body.tz is not None, fill=body.fill)


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
    view = period_overview(span_engine(), scope, spec, zone=zone)  # spans where kept
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
