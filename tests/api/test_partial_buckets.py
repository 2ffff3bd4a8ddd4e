"""GET /api/v1/metrics says which buckets are not whole: `partial: true` and the seconds they
cover, on exactly those rows; the OpenAPI document describes them."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from tests.api.conftest import auth, scope_of
from tests.api.test_routes import normal
from tests.helpers import END


def test_metrics_mark_the_buckets_a_range_cuts(api):
    now = END  # the demo data ends here
    start = (now - timedelta(days=1)).replace(minute=20, second=0, microsecond=0)
    end = (now - timedelta(hours=2)).replace(minute=45, second=0, microsecond=0)
    url = (
        "/metrics?series=request_count.count&series=total_cost.sum&bucket=1hour&group_by=provider"
        f"&start={quote(start.isoformat())}&end={quote(end.isoformat())}"
    )
    got = api["client"].get(url, headers=auth(api))
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    first, last = start.replace(minute=0), end.replace(minute=0)
    assert normal(data["partial_buckets"]) == normal(
        [
            {"bucket": first, "covered_seconds": 2400.0},
            {"bucket": last, "covered_seconds": 2700.0},
        ]
    )
    rows = data["rows"]
    partial = [r for r in rows if r.get("partial")]
    assert partial and {r["bucket"] for r in partial} == set(normal([first, last]))
    assert all(
        r["covered_seconds"] == (2400.0 if r["bucket"] == normal(first) else 2700.0)
        for r in partial
    )
    whole = [r for r in rows if "partial" not in r]
    assert whole and not any("covered_seconds" in r for r in whole)
    assert len(partial) + len(whole) == len(rows)
    core = run_metrics(
        api["engine"],
        scope_of(api),
        MetricQuery(
            series=("request_count.count", "total_cost.sum"),
            filters=FilterSpec(relative=None, start=start, end=end),
            bucket="1hour",
            group_by=("provider",),
        ),
    ).frame
    strip = [{k: v for k, v in r.items() if k not in ("partial", "covered_seconds")} for r in rows]
    assert strip == normal(core.to_dicts())


def test_totals_and_whole_buckets_carry_no_mark(api):
    now = END  # the demo data ends here
    end = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=6)
    url = (
        f"/metrics?series=request_count.count&bucket=1hour&start={quote(start.isoformat())}"
        f"&end={quote(end.isoformat())}"
    )
    data = api["client"].get(url, headers=auth(api)).json()["data"]
    assert data["partial_buckets"] == [] and len(data["rows"]) == 6
    assert not any("partial" in r for r in data["rows"])
    assert all(set(r) == {"bucket", "request_count.count"} for r in data["rows"])  # nothing more
    totals = api["client"].get(url.replace("bucket=1hour", "bucket=none"), headers=auth(api))
    assert totals.json()["data"]["partial_buckets"] == []


def test_openapi_documents_partial_buckets(api):
    document = api["client"].get("/openapi.json").json()
    out = document["components"]["schemas"]["MetricsOut"]["properties"]
    assert "partial_buckets" in out and "partial: true" in out["rows"]["description"]
    bucket = document["components"]["schemas"]["PartialBucket"]["properties"]
    assert set(bucket) == {"bucket", "covered_seconds"}
