"""`GET /ops/metrics`: the Prometheus text format, for a scraper holding the metrics token;
and the timing wrapper of `POST /v1/traces` (requests by status, batch latency)."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from observatory_core.api import ops_collector
from observatory_core.base import prometheus
from observatory_core.base.settings import get_settings

ops_collector.register()  # the scrape-time series, in every process that serves this route

PATH = "/ops/metrics"  # /metrics is the Metrics page's address


async def metrics(request: Request) -> Response:
    refused = prometheus.token_refusal(
        get_settings().metrics_token, request.headers.get("authorization")
    )
    if refused:
        status, message = refused
        headers = {"WWW-Authenticate": 'Bearer realm="metrics"'} if status == 401 else None
        return JSONResponse(
            {
                "error": {
                    "code": "forbidden" if status == 403 else "unauthorized",
                    "message": message,
                }
            },
            status_code=status,
            headers=headers,
        )
    body, content_type = await run_in_threadpool(
        prometheus.exposition, request.headers.get("accept")
    )
    return Response(body, headers={"content-type": content_type})


def timed(handler):
    """The OTLP route, counted by answer and timed per request (one exporter batch)."""

    async def wrapper(request: Request) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status_code
            return response
        finally:
            prometheus.INGEST_SECONDS.observe(time.perf_counter() - started)
            prometheus.INGEST_REQUESTS.labels(str(status)).inc()

    return wrapper
