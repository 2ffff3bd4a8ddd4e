"""Each route for each role, the other org's ids, and answers equal to the core's."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import polars as pl
import pytest

from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.traces.query import list_spans
from tests.api.conftest import auth, scope_of
from tests.helpers import all_spans
from tests.metrics.reference import reference_trace_metrics


def normal(value):
    """JSON as the API sends it, to compare core results with answers."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat().replace("+00:00", "Z")))


def test_list_equals_the_core_for_the_same_filter_and_pages_on(api):
    client = api["client"]
    spec = FilterSpec(relative=None, models=("gpt-4o",), min_duration_ms=500.0)
    query = "relative=all&models=gpt-4o&min_duration_ms=500&limit=20&sort=duration_ms"
    got = client.get(f"/traces?{query}", headers=auth(api))
    assert got.status_code == 200, got.text
    body = got.json()
    core = list_spans(api["engine"], scope_of(api), spec, limit=20, sort="duration_ms")
    assert body["data"] == normal(core.rows) and len(body["data"]) == 20
    assert body["meta"]["cached"] is False and body["meta"]["execution_ms"] >= 0
    second = client.get(f"/traces?{query}&cursor={body['next_cursor']}", headers=auth(api)).json()
    assert not {r["span_id"] for r in second["data"]} & {r["span_id"] for r in body["data"]}
    assert all(
        r["model"] == "gpt-4o" and r["duration_ms"] >= 500 for r in body["data"] + second["data"]
    )


def test_trace_detail_and_other_orgs_ids(api):
    client = api["client"]
    row = client.get("/traces?relative=all&limit=1&mode=traces", headers=auth(api)).json()["data"][
        0
    ]
    trace = client.get(f"/traces/{row['trace_id']}", headers=auth(api)).json()["data"]
    assert trace["trace_id"] == row["trace_id"] and trace["spans"][0]["depth"] == 0
    other = client.get(f"/traces/{row['trace_id']}", headers=auth(api, "globex"))
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    bad = client.get("/traces/not-hex", headers=auth(api))
    assert bad.status_code == 422 and "trace_id" in bad.json()["error"]["message"]


def test_metrics_equal_the_core_and_repeat_from_cache(api):
    client = api["client"]
    url = "/metrics?series=duration_ms.p95&series=request_count.count&bucket=none&group_by=model&relative=all"
    first = client.get(url, headers=auth(api)).json()
    core = run_metrics(
        api["engine"],
        scope_of(api),
        MetricQuery(
            series=("duration_ms.p95", "request_count.count"),
            filters=FilterSpec(relative=None),
            bucket=None,
            group_by=("model",),
        ),
    )
    key = lambda r: str(r["model"])  # noqa: E731
    assert sorted(first["data"]["rows"], key=key) == sorted(normal(core.frame.to_dicts()), key=key)
    again = client.get(url, headers=auth(api)).json()
    assert again["meta"]["cached"] is True and again["data"] == first["data"]


def test_custom_query_with_having_sort_and_limit(api):
    body = {
        "series": ["total_cost.sum", "request_count.count"],
        "filters": {"relative": None},
        "bucket": None,
        "group_by": ["model"],
        "having": [{"series": "request_count.count", "op": ">=", "value": 20}],
        "sort": "total_cost.sum",
        "limit": 3,
    }
    got = api["client"].post("/metrics/query", json=body, headers=auth(api))
    assert got.status_code == 200, got.text
    rows = got.json()["data"]["rows"]
    assert len(rows) <= 3 and all(r["request_count.count"] >= 20 for r in rows)
    costs = [r["total_cost.sum"] for r in rows]
    assert costs == sorted(costs, reverse=True)


def test_summary_compares_with_the_previous_period(api):
    got = api["client"].get("/metrics/summary?relative=7d", headers=auth(api, "billing"))
    assert got.status_code == 200
    kpis = {k["key"]: k for k in got.json()["data"]["kpis"]}
    assert "requests" in kpis or len(kpis) >= 5


@pytest.mark.parametrize(
    ("role", "traces", "costs", "export"),
    [
        ("admin", 200, True, 201),
        ("developer", 200, True, 201),
        ("viewer", 200, False, 403),
        ("billing", 403, True, 201),
    ],
)
def test_each_role_gets_what_design_section_6_says(api, role, traces, costs, export):
    client = api["client"]
    assert client.get("/traces?relative=all&limit=5", headers=auth(api, role)).status_code == traces
    cost = client.get(
        "/metrics?series=total_cost.sum&bucket=none&relative=all", headers=auth(api, role)
    )
    assert (cost.status_code == 200) == costs
    made = client.post(
        "/export/traces",
        json={"filters": {"relative": None}, "format": "jsonl"},
        headers=auth(api, role),
    )
    assert made.status_code == export
    assert client.get("/export/jobs", headers=auth(api, role)).status_code == 200


def test_export_lifecycle_and_isolation(api, tmp_path):
    client = api["client"]
    made = client.post(
        "/export/traces",
        json={
            "filters": {"relative": None, "models": ["gpt-4o"]},
            "format": "csv",
            "compression": "none",
        },
        headers=auth(api),
    )
    job = made.json()["data"]
    assert job["status"] == "pending" and job["filters"]["models"] == ["gpt-4o"]
    assert client.get(f"/export/jobs/{job['id']}/download", headers=auth(api)).status_code == 409
    assert client.get(f"/export/jobs/{job['id']}", headers=auth(api, "globex")).status_code == 404
    assert (
        client.delete(f"/export/jobs/{job['id']}", headers=auth(api, "globex")).status_code == 404
    )
    config = WorkerConfig(export_dir=tmp_path / "exports", heartbeat_timeout=timedelta(seconds=30))
    assert work_once(api["engine"], config) == "completed"
    done = client.get(f"/export/jobs/{job['id']}", headers=auth(api)).json()["data"]
    assert done["status"] == "completed" and done["rows_written"] > 0
    file = client.get(f"/export/jobs/{job['id']}/download", headers=auth(api, "billing"))
    assert file.status_code == 200 and file.text.count("\n") == done["rows_written"] + 1
    refused = client.get(f"/export/jobs/{job['id']}/download", headers=auth(api, "viewer"))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "total_cost_usd" in refused.json()["error"]["message"]
    assert (
        client.get(f"/export/jobs/{job['id']}/download", headers=auth(api, "globex")).status_code
        == 404
    )
    conflict = client.delete(f"/export/jobs/{job['id']}", headers=auth(api))
    assert conflict.status_code == 409 and "completed" in conflict.json()["error"]["message"]
    second = client.post("/export/traces", json={}, headers=auth(api)).json()["data"]
    cancelled = client.delete(f"/export/jobs/{second['id']}", headers=auth(api))
    assert cancelled.status_code == 200 and cancelled.json()["data"]["status"] == "cancelled"


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/traces?colour=red", 400, "Unknown query parameter 'colour'"),
        ("/traces?min_cost_usd=cheap", 400, "min_cost_usd"),
        ("/traces?relative=2y", 400, "relative"),
        ("/traces?limit=0", 422, "limit"),
        ("/traces?cursor=garbage", 400, "cursor"),
        ("/metrics?series=request_count.p95", 400, "p95 does not fit request_count"),
        ("/metrics?series=duration_ms.p95&bucket=1min&relative=30d", 400, "1min"),
        ("/export/jobs/999999", 404, "No export 999999"),
    ],
)
def test_bad_input_gets_a_code_and_a_message(api, url, status, message):
    got = api["client"].get(url, headers=auth(api))
    assert got.status_code == status
    assert message in got.json()["error"]["message"]


def test_keys_and_rate_limits(api, monkeypatch):
    from observatory_core.accounts.permissions import Role
    from observatory_core.api import context
    from observatory_core.api.ratelimit import RateLimiter

    client = api["client"]
    assert client.get("/traces").json()["error"]["code"] == "unauthorized"
    refused = client.get("/traces", headers=auth(api, "ingest-only"))
    assert refused.status_code == 401 and "'read' scope" in refused.json()["error"]["message"]
    ok = client.get("/export/jobs", headers={**auth(api), "x-request-id": "abc-123"})
    assert (
        ok.headers["x-ratelimit-limit"] == "600" and int(ok.headers["x-ratelimit-remaining"]) == 599
    )
    assert ok.json()["meta"]["request_id"] == "abc-123" and ok.headers["x-request-id"] == "abc-123"
    monkeypatch.setattr(context, "limiter", RateLimiter({r: 2 for r in Role}, clock=lambda: 100.0))
    statuses = [
        client.get("/export/jobs", headers=auth(api, "viewer")).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    limited = client.get("/export/jobs", headers=auth(api, "viewer"))
    assert (
        limited.headers["retry-after"] == "30" and limited.json()["error"]["code"] == "rate_limited"
    )
    assert client.get("/export/jobs", headers=auth(api, "admin")).status_code == 200  # per key


ROUTE_ROLES = {  # route -> expected status for admin, developer, viewer, billing
    "GET /traces?relative=all&limit=3": (200, 200, 200, 403),
    "GET /traces/{trace}": (200, 200, 200, 403),
    "GET /metrics?series=request_count.count&bucket=none&relative=all": (200, 200, 200, 200),
    "GET /metrics/summary?relative=7d": (200, 200, 200, 200),
    "POST /metrics/query": (200, 200, 200, 200),
    "POST /export/traces": (201, 201, 403, 201),
    "GET /export/jobs": (200, 200, 200, 200),
    "GET /export/jobs/{done}": (200, 200, 200, 200),
    # the developer's default export holds total_cost_usd: refused to a viewer (403)
    "GET /export/jobs/{done}/download": (200, 200, 403, 200),
    "DELETE /export/jobs/{pending}": (200, 200, 403, 200),
}


@pytest.mark.parametrize("route", list(ROUTE_ROLES))
def test_every_route_for_every_role_and_for_another_org(api, tmp_path, route):
    client = api["client"]
    trace = client.get("/traces?relative=all&limit=1", headers=auth(api)).json()["data"][0][
        "trace_id"
    ]
    done = client.post("/export/traces", json={"format": "jsonl"}, headers=auth(api)).json()[
        "data"
    ]["id"]
    config = WorkerConfig(export_dir=tmp_path / "exports", heartbeat_timeout=timedelta(seconds=30))
    assert work_once(api["engine"], config) == "completed"
    method, path = route.split(" ", 1)
    for role, expected in zip(
        ("admin", "developer", "viewer", "billing"), ROUTE_ROLES[route], strict=True
    ):
        pending = client.post("/export/traces", json={}, headers=auth(api)).json()["data"]["id"]
        url = path.format(trace=trace, done=done, pending=pending)
        body = {"series": ["request_count.count"], "bucket": None} if "query" in url else {}
        got = client.request(
            method, url, headers=auth(api, role), json=body if method == "POST" else None
        )
        assert got.status_code == expected, (role, url, got.text[:200])
    if "{" in path:  # the same ids through another org's key: never found
        url = path.format(trace=trace, done=done, pending=done)
        assert client.request(method, url, headers=auth(api, "globex")).status_code == 404


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a server drops connections
def test_a_dropped_database_connection_costs_one_request_at_most(api, db_url):
    """The pool does not ping before each request: when the server drops its connections
    (a restart), a request may fail once with a 503 that says to retry, and the next works."""
    from sqlalchemy.engine import make_url

    from tests.conftest import pg_admin

    client, headers = api["client"], auth(api)
    assert client.get("/traces?relative=all", headers=headers).status_code == 200
    database = make_url(db_url).database
    pg_admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    first = client.get("/traces?relative=all", headers=headers)
    if first.status_code != 200:
        assert first.status_code == 503 and first.headers["retry-after"] == "5"
        assert first.json()["error"]["code"] == "unavailable"
        assert "retry" in first.json()["error"]["message"]
    again = client.get("/traces?relative=all", headers=headers)
    assert again.status_code == 200 and again.json()["data"]


def test_openapi_documents_every_filter_on_the_filtered_routes(api):
    """Filters are parsed once by the route, not by FastAPI, so the document lists them from
    FilterParams: each as an optional query parameter, lists as arrays."""
    from observatory_core.api.schemas import FilterParams

    document = api["client"].get("/openapi.json").json()
    for path in ("/traces", "/metrics", "/metrics/summary"):
        parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
        assert set(FilterParams.model_fields) <= set(parameters), path
        assert parameters["models"]["schema"]["type"] == "array"
        assert parameters["models"]["in"] == "query" and not parameters["models"]["required"]
        assert "24h" in parameters["relative"]["description"]
    traces = {p["name"] for p in document["paths"]["/traces"]["get"]["parameters"]}
    assert {"mode", "sort", "limit", "cursor"} <= traces  # the route's own stay documented


def test_trace_series_equal_polars_over_the_rows_grouped_by_trace(api):
    url = (
        "/metrics?series=trace_count.count&series=trace_duration_ms.p95&series=trace_cost.sum"
        "&bucket=1hour&group_by=project&relative=all"
    )
    got = api["client"].get(url, headers=auth(api))
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    start, end = (datetime.fromisoformat(data[k].replace("Z", "+00:00")) for k in ("start", "end"))
    ref = reference_trace_metrics(
        all_spans(api["engine"]),
        FilterSpec(relative=None, start=start, end=end),
        end,
        api["acme"],
        tuple(data["series"]),
        ("project",),
        data["bucket_seconds"],
    )
    want = {(normal(r["bucket"]), r["project"]): r for r in ref.to_dicts()}
    rows = [r for r in data["rows"] if r["trace_count.count"]]
    assert len(rows) == len(want) and sum(r["trace_count.count"] for r in rows) > 100
    for row in rows:
        expected = want[(row["bucket"], row["project"])]
        assert row["trace_count.count"] == expected["trace_count.count"]
        assert row["trace_duration_ms.p95"] == pytest.approx(expected["trace_duration_ms.p95"])
        assert row["trace_cost.sum"] == pytest.approx(expected["trace_cost.sum"])


def test_trace_and_span_series_are_refused_together_and_the_summary_has_traces(api):
    mixed = api["client"].get(
        "/metrics?series=trace_count.count&series=request_count.count&relative=all",
        headers=auth(api),
    )
    assert mixed.status_code == 400 and "chart them separately" in mixed.text
    got = api["client"].get("/metrics/summary?relative=7d", headers=auth(api))
    keys = [k["key"] for k in got.json()["data"]["kpis"]]
    assert keys[:2] == ["requests", "traces"]


def test_metrics_say_what_each_series_counts_and_tool_calls_group_by_name(api):
    """Issue 24: requests are LLM calls (no model-less row), tool calls have their own
    figures by tool name; the answer names each series' subject."""
    from tests.helpers import all_spans
    from tests.reference import reference_llm_calls

    url = (
        "/metrics?series=request_count.count&series=span_count.count&bucket=none"
        "&group_by=operation&relative=all"
    )
    data = api["client"].get(url, headers=auth(api)).json()["data"]
    assert data["subjects"] == {"request_count.count": "llm_calls", "span_count.count": "spans"}
    df = all_spans(api["engine"]).filter(pl.col("org_id") == scope_of(api).org_id)
    calls = reference_llm_calls(df)
    got = {r["operation"]: r["request_count.count"] for r in data["rows"]}
    want = df.group_by("operation").agg(pl.col("id").is_in(list(calls)).sum().alias("n"))
    assert got == dict(want.iter_rows())
    assert got["invoke_agent"] == got["execute_tool"] == 0 < got["chat"]
    url = "/metrics?series=tool_call_count.count&bucket=none&group_by=name&relative=all"
    rows = api["client"].get(url, headers=auth(api)).json()["data"]["rows"]
    tools = df.filter(pl.col("operation") == "execute_tool").group_by("name").len()
    assert {r["name"]: r["tool_call_count.count"] for r in rows} == dict(tools.iter_rows())


def test_metrics_group_by_a_metadata_key_and_refuse_a_bad_key(api):
    """Issue 19: `group_by=metadata:<key>` / `tag:<key>` equals the core; a bad key is a 400
    that says what to send."""
    client = api["client"]
    url = "/metrics?series=total_cost.sum&bucket=none&group_by=metadata:region&relative=all"
    got = client.get(url, headers=auth(api, "billing"))
    assert got.status_code == 200, got.text
    core = run_metrics(
        api["engine"],
        scope_of(api, "billing"),
        MetricQuery(
            series=("total_cost.sum",),
            filters=FilterSpec(relative=None),
            bucket=None,
            group_by=("metadata:region",),
        ),
    )
    key = lambda r: str(r["metadata:region"])  # noqa: E731
    rows = got.json()["data"]["rows"]
    assert {r["metadata:region"] for r in rows} >= {"us-east-1", "eu-west-1"}
    assert sorted(rows, key=key) == sorted(normal(core.frame.to_dicts()), key=key)
    for bad, says in (("customer", "metadata:<key>"), ("tag:no spaces", "1 to 64 letters")):
        refused = client.get(
            f"/metrics?series=request_count&group_by={bad}&relative=all", headers=auth(api)
        )
        assert refused.status_code == 400, refused.text
        message = refused.json()["error"]["message"]
        assert "Cannot group by" in message and says in message
    viewer = client.get(
        "/metrics?series=total_cost.sum&group_by=tag:customer&relative=all",
        headers=auth(api, "viewer"),
    )
    assert viewer.status_code == 403  # viewers see no costs, by any key
