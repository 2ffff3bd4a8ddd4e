"""GET /api/v1/metrics says which buckets are not whole: `partial: true` and the seconds they
cover, on exactly those rows; it sends only the buckets with data unless asked to fill them
(`fill=true`, as a chart draws them); the OpenAPI document describes both."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from tests.api.conftest import auth, scope_of
from tests.api.test_routes import normal
from tests.helpers import END, all_spans
from tests.reference import reference_llm_calls


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    """Rows of two reads: the same keys and values, a float sum to its last bits (PostgreSQL
    adds a bucket's floats in no fixed order, so two reads of one sum can differ there)."""
    assert len(got) == len(want)
    for row, expected in zip(got, want, strict=True):
        assert row.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
            else:
                assert row[key] == value, key


def test_metrics_mark_the_buckets_a_range_cuts(api):
    now = END  # the demo data ends here
    start = (now - timedelta(days=1)).replace(minute=20, second=0, microsecond=0)
    end = (now - timedelta(hours=2)).replace(minute=45, second=0, microsecond=0)
    url = (
        "/metrics?series=request_count.count&series=total_cost.sum&bucket=1hour&group_by=provider"
        f"&start={quote(start.isoformat())}&end={quote(end.isoformat())}&fill=true"
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
    assert_same_rows(strip, normal(core.to_dicts()))


def test_totals_and_whole_buckets_carry_no_mark(api):
    now = END  # the demo data ends here
    end = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=6)
    url = (
        f"/metrics?series=request_count.count&bucket=1hour&start={quote(start.isoformat())}"
        f"&end={quote(end.isoformat())}&fill=true"
    )
    data = api["client"].get(url, headers=auth(api)).json()["data"]
    assert data["partial_buckets"] == [] and len(data["rows"]) == 6 and data["filled"]
    assert not any("partial" in r for r in data["rows"])
    assert all(set(r) == {"bucket", "request_count.count"} for r in data["rows"])  # nothing more
    totals = api["client"].get(url.replace("bucket=1hour", "bucket=none"), headers=auth(api))
    assert totals.json()["data"]["partial_buckets"] == []


def test_only_buckets_with_data_are_sent_unless_filled(api):
    """Issue 25: most cells of a wide grouping are empty; the API leaves them out unless asked.
    The rows sent are exactly the (hour, model) pairs polars finds LLM calls in, with its counts
    and costs, and equal to the filled answer less its empty rows."""
    end = (END - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=12)
    url = (
        "/metrics?series=request_count.count&series=total_cost.sum&series=duration_ms.p95"
        f"&bucket=1hour&group_by=model&start={quote(start.isoformat())}"
        f"&end={quote(end.isoformat())}"
    )
    sparse = api["client"].get(url, headers=auth(api)).json()["data"]
    filled = api["client"].get(url + "&fill=true", headers=auth(api)).json()["data"]
    assert not sparse["filled"] and filled["filled"]
    models = {r["model"] for r in filled["rows"]}
    assert len(filled["rows"]) == 12 * len(models)  # every hour of every model seen
    # the reference: polars over the org's LLM calls (the requests) in the window
    df = all_spans(api["engine"]).filter(
        (pl.col("org_id") == scope_of(api).org_id)
        & pl.col("id").is_in(list(reference_llm_calls(all_spans(api["engine"]))))
        & (pl.col("start_time") >= start)
        & (pl.col("start_time") < end)
        & pl.col("duplicate_of").is_null()
    )
    ref = (
        df.with_columns(pl.col("start_time").dt.truncate("1h").alias("hour"))
        .group_by("hour", pl.col("model").fill_null(""))
        .agg(pl.len().alias("n"), pl.col("total_cost_usd").sum().alias("cost"))
    )
    want = {(normal(h), m): (n, c) for h, m, n, c in ref.iter_rows()}
    got = {(r["bucket"], r["model"]): r for r in sparse["rows"]}
    assert set(got) == set(want) and len(got) < len(filled["rows"])  # some hours were empty
    for key, (n, cost) in want.items():
        assert got[key]["request_count.count"] == n
        assert got[key]["total_cost.sum"] == pytest.approx(cost, rel=1e-9, abs=1e-12)
    assert_same_rows(sparse["rows"], [r for r in filled["rows"] if r["request_count.count"] > 0])
    assert [r["bucket"] for r in sparse["rows"]] == sorted(r["bucket"] for r in sparse["rows"])


def test_openapi_documents_partial_buckets(api):
    document = api["client"].get("/openapi.json").json()
    out = document["components"]["schemas"]["MetricsOut"]["properties"]
    assert "partial_buckets" in out and "partial: true" in out["rows"]["description"]
    assert "filled" in out
    fill = [p for p in document["paths"]["/metrics"]["get"]["parameters"] if p["name"] == "fill"]
    assert fill and "only the buckets that hold data" in fill[0]["description"]
    bucket = document["components"]["schemas"]["PartialBucket"]["properties"]
    assert set(bucket) == {"bucket", "covered_seconds"}
