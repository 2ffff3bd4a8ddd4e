"""The Prometheus endpoint: refused without the token, the standard text format, and its series
move when spans arrive through POST /v1/traces and when an export runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.api.mount import routes
from observatory_core.base.settings import get_settings
from observatory_core.exports.jobs import create_export, get_export
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest import service
from observatory_core.ingest.apikeys import create_key
from observatory_core.storage.schema import spans
from tests.helpers import admin_scope, make_org
from tests.ingest.conftest import PROTOBUF, sample

TOKEN = "metrics-token-0123456789abcdef"
PATH = "/ops/metrics"


@pytest.fixture
def app(engine, db_url, monkeypatch, tmp_path):
    """The server's routes in-process on the test database, with a fresh OTLP writer."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("OBSERVATORY_METRICS_TOKEN", TOKEN)
    monkeypatch.setenv("OBSERVATORY_COOKIE_KEY", "k" * 40)
    monkeypatch.setenv("OBSERVATORY_EXPORT_DIR", str(tmp_path / "exports"))
    get_settings.cache_clear()
    monkeypatch.setattr(service, "_pair", None)
    monkeypatch.setattr(service, "_stopped", False)
    with TestClient(Starlette(routes=routes())) as client:
        yield client
    if service._pair is not None:
        service._pair[1].stop()
    get_settings.cache_clear()


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get(PATH, headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(series, name, **labels) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before, after, name, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_the_format_follows_the_scrapers_accept_header(app):
    auth = {"authorization": f"Bearer {TOKEN}"}
    classic = app.get(PATH, headers={**auth, "accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"})
    assert classic.headers["content-type"].startswith("text/plain; version=")
    assert "observatory_build_info{" in classic.text
    open_metrics = app.get(
        PATH, headers={**auth, "accept": "application/openmetrics-text;version=1.0.0"}
    )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")


def test_the_endpoint_needs_the_token(app, monkeypatch):
    assert app.get(PATH).status_code == 401
    wrong = app.get(PATH, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "Bearer TOKEN" in wrong.json()["error"]["message"]
    assert app.get(PATH, headers={"authorization": f"Basic {TOKEN}"}).status_code == 401
    monkeypatch.delenv("OBSERVATORY_METRICS_TOKEN")
    get_settings.cache_clear()
    off = app.get(PATH, headers={"authorization": f"Bearer {TOKEN}"})
    assert off.status_code == 403 and "OBSERVATORY_METRICS_TOKEN" in off.json()["error"]["message"]
    monkeypatch.setenv("OBSERVATORY_METRICS_TOKEN", "short")
    get_settings.cache_clear()
    short = app.get(PATH, headers={"authorization": "Bearer short"})
    assert short.status_code == 403 and "shorter than 16" in short.json()["error"]["message"]


def test_series_move_when_spans_arrive(app, engine):
    org_id, _ = make_org(engine, "acme", ("support-bot", "default"))
    key = create_key(engine, admin_scope(org_id), "metrics test")
    request = ExportTraceServiceRequest.FromString(sample("genai.pb"))
    sent = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b""  # one span is invalid
    headers = {"content-type": PROTOBUF, "authorization": f"Bearer {key}"}

    before = scrape(app)
    answer = app.post("/v1/traces", content=request.SerializeToString(), headers=headers)
    assert answer.status_code == 200
    refused = app.post("/v1/traces", content=b"x", headers={**headers, "authorization": "Bearer x"})
    assert refused.status_code == 401
    after = scrape(app)

    with engine.connect() as conn:
        stored = conn.execute(
            select(func.count()).select_from(spans).where(spans.c.org_id == org_id)
        ).scalar_one()
    assert stored == sent - 1 > 0
    assert moved(before, after, "observatory_ingest_spans_received_total") == sent
    assert moved(before, after, "observatory_ingest_spans_stored_total") == stored
    assert moved(before, after, "observatory_ingest_spans_refused_total", reason="invalid") == 1
    assert moved(before, after, "observatory_ingest_requests_total", code="200") == 1
    assert moved(before, after, "observatory_ingest_requests_total", code="401") == 1
    assert moved(before, after, "observatory_ingest_request_duration_seconds_count") == 2
    assert value(after, "observatory_ingest_queue_spans") == 0  # written: nothing waits
    assert value(after, "observatory_database_up") == 1
    assert value(after, "observatory_db_pool_size") > 0
    assert ("observatory_db_pool_connections", (("state", "in_use"),)) in after
    (build,) = [k for k in after if k[0] == "observatory_build_info"]
    assert dict(build[1])["version"] == "0.1.0" and after[build] == 1


def test_series_move_when_an_export_runs(app, engine, tmp_path):
    from tests.helpers import load_small_demo

    load_small_demo(engine, spans_count=300, days=1, seed=3)
    with engine.connect() as conn:
        from observatory_core.storage.schema import orgs

        acme = conn.execute(select(orgs.c.id).where(orgs.c.slug == "acme")).scalar_one()
    scope = Scope(org_id=acme, role=Role.DEVELOPER, username="dana")
    before = scrape(app)
    job = create_export(engine, scope, FilterSpec(relative=None))
    queued = scrape(app)
    assert moved(before, queued, "observatory_export_jobs", state="pending") == 1
    config = WorkerConfig(export_dir=tmp_path / "exports", heartbeat_timeout=timedelta(seconds=30))
    assert work_once(engine, config) == "completed"
    after = scrape(app)
    assert get_export(engine, scope, job["id"])["status"] == "completed"
    assert moved(before, after, "observatory_export_jobs", state="pending") == 0
    assert moved(before, after, "observatory_export_jobs", state="completed") == 1
    assert (
        moved(before, after, "observatory_export_job_duration_seconds_count", state="completed")
        == 1
    )


def test_alert_rounds_and_webhook_failures_are_counted(app, engine, monkeypatch):
    """The loops as the worker runs them: one evaluation round, one failed delivery (to a
    loopback port where nothing listens, allowed for the test)."""
    import threading

    from observatory_core.alerts import webhooks
    from observatory_core.alerts.evaluate import evaluate
    from observatory_core.alerts.loops import start_loops
    from observatory_core.alerts.rules import build_rule, create_rule
    from observatory_core.base import prometheus
    from tests.alerts.conftest import add_spans

    org_id, (project,) = make_org(engine, "acme")
    # The loops evaluate at the real time: the spans are a minute old then too, so their round
    # finds the rule still firing and queues nothing new (spans at a fixed past time made it
    # resolve, and the webhook loop counted the resolution's failed delivery as a second retry).
    now = datetime.now(UTC)
    add_spans(engine, org_id, project, minutes_ago=1, count=5, now=now, duration_ms=4000.0)
    monkeypatch.setattr(webhooks, "allow_list", lambda: webhooks.AllowList.parse(["127.0.0.1"]))
    # the retry is not due again while the loops run (5 s passed under load: counted twice)
    monkeypatch.setattr(webhooks, "BACKOFF_S", 3600.0)
    spec = build_rule(
        name="slow",
        series="duration_ms.p95",
        comparator=">",
        threshold=1000,
        window_s=300,
        webhook_url="http://127.0.0.1:9/nothing-listens-here",
    )
    create_rule(engine, admin_scope(org_id), spec, now=now)
    evaluate(engine, now)
    before = scrape(app)
    assert webhooks.deliver_due(engine) == 1  # refused connection: retried in 5 s
    stop = threading.Event()
    real_round = prometheus.alert_round

    def one_round(seconds):
        real_round(seconds)
        stop.set()

    monkeypatch.setattr(prometheus, "alert_round", one_round)
    for thread in start_loops(engine, "test-worker", 3600, stop):
        thread.join(30)
    after = scrape(app)
    assert moved(before, after, "observatory_webhook_deliveries_total", outcome="retry") == 1
    assert moved(before, after, "observatory_alert_evaluation_duration_seconds_count") == 1
    assert 0 <= value(after, "observatory_alert_evaluation_lag_seconds") < 60
    assert 0 <= value(after, "observatory_worker_heartbeat_age_seconds") < 60


def test_the_separate_port_serves_the_same_series_without_a_token(app):
    import socket
    import urllib.request

    from observatory_core.base.errors import ConfigError
    from observatory_core.base.prometheus import serve_on_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve_on_port(port, "127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    assert (
        "observatory_ingest_spans_received_total" in body and "observatory_database_up 1.0" in body
    )
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port} cannot be opened"):
        serve_on_port(port, "127.0.0.1")  # taken: a clear message, not a traceback
