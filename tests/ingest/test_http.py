"""`POST /v1/traces` on the real server, on both databases: a real OpenTelemetry SDK exporter,
every documented status, concurrent clients, and the demo traffic flowing in."""

from __future__ import annotations

import gzip
import json
import time
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sqlalchemy import func, select

from observatory_core.storage.schema import ROLLUPS, spans
from tests.helpers import all_spans
from tests.ingest.conftest import JSON, PROTOBUF, json_message, post, sample

pytestmark = pytest.mark.timeout(300)


def org_spans(live) -> pl.DataFrame:
    df = all_spans(live["engine"])
    return df.filter(pl.col("org_id") == live["org_id"]) if df.height else df


def snapshot(live) -> list[tuple]:
    """Every stored span of the org, to show that bad requests harm nothing."""
    df = org_spans(live)
    return sorted(df.drop("id").rows()) if df.height else []


def auth(live, kind=PROTOBUF, **extra) -> dict[str, str]:
    return {"content-type": kind, "authorization": f"Bearer {live['key']}", **extra}


def unique_request(n_spans: int, seed: int, shared: int = 0) -> bytes:
    """A request of `n_spans` chat spans; the first `shared` have ids every seed shares."""
    request = ExportTraceServiceRequest.FromString(sample("genai.pb"))
    template = request.resource_spans[0].scope_spans[0].spans[0]
    spans_out = request.resource_spans[0].scope_spans[0].spans
    del request.resource_spans[1:]
    del spans_out[:]
    for i in range(n_spans):
        span = spans_out.add()
        span.CopyFrom(template)
        owner = 0 if i < shared else seed
        span.trace_id = (owner * 1_000_003 + i + 1).to_bytes(16, "big")
        span.span_id = (owner * 1_000_003 + i + 1).to_bytes(8, "big")
        span.parent_span_id = b""
    return request.SerializeToString()


def test_sdk_exporter_sends_and_the_spans_appear(live_ingest):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = OTLPSpanExporter(
        endpoint=f"{live_ingest['base']}/v1/traces",
        headers={"authorization": f"Bearer {live_ingest['key']}"},
    )
    provider = TracerProvider(
        resource=Resource.create({"service.name": "sdk-test", "observatory.project": "search"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    chat_attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
        "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"sdk hello"}]}]',
    }
    root_attributes = {"gen_ai.operation.name": "invoke_agent"}
    with (
        tracer.start_as_current_span("invoke_agent sdk", attributes=root_attributes),
        tracer.start_as_current_span("chat gpt-4o", attributes=chat_attributes),
    ):
        pass
    provider.shutdown()
    df = org_spans(live_ingest).filter(pl.col("service_name") == "sdk-test")
    assert df.height == 2  # SimpleSpanProcessor exported synchronously: stored on return
    chat = df.filter(pl.col("name") == "chat gpt-4o").row(0, named=True)
    root = df.filter(pl.col("name") == "invoke_agent sdk").row(0, named=True)
    assert chat["parent_span_id"] == root["span_id"] and chat["trace_id"] == root["trace_id"]
    assert chat["input_text"] == "sdk hello" and chat["total_tokens"] == 1100
    assert chat["total_cost_usd"] > 0 and chat["cost_source"] == "computed"
    assert chat["project_id"] == live_ingest["project_ids"][1]  # observatory.project = search


def test_success_answers_in_the_request_encoding(live_ingest):
    status, headers, body = post(live_ingest["base"], sample("genai.pb"), auth(live_ingest))
    assert status == 200 and headers["content-type"] == PROTOBUF
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 0
    status, headers, body = post(
        live_ingest["base"],
        gzip.compress(sample("genai.json")),
        auth(live_ingest, JSON, **{"content-encoding": "gzip"}),
    )
    assert status == 200 and headers["content-type"] == JSON and json.loads(body) == {}


def test_partial_success_names_the_rejected_spans(live_ingest):
    request = ExportTraceServiceRequest.FromString(unique_request(3, seed=77))
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b""
    status, _, body = post(live_ingest["base"], request.SerializeToString(), auth(live_ingest))
    assert status == 200
    partial = ExportTraceServiceResponse.FromString(body).partial_success
    assert partial.rejected_spans == 1 and "trace_id must be 16 bytes" in partial.error_message
    stored = org_spans(live_ingest).filter(
        pl.col("span_id").is_in([(77 * 1_000_003 + i).to_bytes(8, "big").hex() for i in (1, 3)])
    )
    assert stored.height == 2


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (sample("genai.pb"), {"content-type": PROTOBUF}, 401, "No API key"),
        (
            sample("genai.pb"),
            {"content-type": PROTOBUF, "authorization": "Bearer obs_wrong"},
            401,
            "Unknown API key",
        ),
        (b"\x0a\xff\xff\xff\xff", None, 400, "not a valid OTLP"),
        (sample("genai.json")[:-40], {"content-type": JSON}, 400, "not valid JSON"),
        (gzip.compress(sample("genai.pb"))[:-10], {"content-encoding": "gzip"}, 400, "cut short"),
        (sample("genai.pb"), {"content-type": "text/csv"}, 415, "is not supported"),
        (b"x" * (2 * 2**20 + 10), None, 413, "batch size"),
        # sent whole by the client before it reads: answered, not cut off (the limit is 2 MiB)
        (b"x" * (60 * 2**20), None, 413, "batch size"),
        (gzip.compress(b"\0" * (20 * 2**20)), {"content-encoding": "gzip"}, 413, "uncompressed"),
        (b"[" * 100_000 + b"]" * 100_000, {"content-type": JSON}, 400, "nested too deeply"),
    ],
)
def test_bad_requests_get_status_and_message_and_harm_nothing(
    live_ingest, body, headers, status, message
):
    before = snapshot(live_ingest)
    sent_headers = auth(live_ingest)
    if headers is not None:
        sent_headers = {**sent_headers, **headers}
        if "authorization" not in headers and status == 401:
            del sent_headers["authorization"]
    got, reply_headers, reply = post(live_ingest["base"], body, sent_headers)
    assert got == status
    kind = sent_headers["content-type"]
    if kind == JSON:
        assert message in json_message(reply)
    elif kind == PROTOBUF:
        assert message in status_pb2.Status.FromString(reply).message
    else:
        assert message in json.loads(reply)["message"] or message in reply.decode(errors="replace")
    assert snapshot(live_ingest) == before


def test_a_body_over_the_limit_without_a_length_gets_its_413_and_the_connection_lives_on(
    live_ingest,
):
    """Chunked, 60 MiB: the server reads it to its end, answers 413, and the same connection
    then takes a good request."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(live_ingest["base"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    chunk = b"x" * 2**20
    try:
        conn.request(
            "POST",
            "/v1/traces",
            body=iter([chunk] * 60),
            headers=auth(live_ingest, JSON),
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 413 and "batch size" in json_message(response.read())
        conn.request(
            "POST", "/v1/traces", body=unique_request(3, seed=88), headers=auth(live_ingest)
        )
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
    finally:
        conn.close()


def test_one_overflowing_integer_costs_only_its_span(live_ingest):
    """OTLP/JSON allows any JSON number; an int attribute over 2^63 refuses its span only."""
    doc = json.loads(sample("genai.json"))
    spans_in = [s for r in doc["resourceSpans"] for s in r["scopeSpans"][0]["spans"]]
    for i, span in enumerate(spans_in):
        span["spanId"] = f"{0x5EED00 + i:016x}"
    spans_in[0]["attributes"].append({"key": "big", "value": {"intValue": 2**64}})
    status, _, body = post(live_ingest["base"], json.dumps(doc).encode(), auth(live_ingest, JSON))
    partial = json.loads(body)["partialSuccess"]
    assert status == 200 and partial["rejectedSpans"] in (1, "1")
    assert "Value out of range: 18446744073709551616" in partial["errorMessage"]
    stored = org_spans(live_ingest).filter(
        pl.col("span_id").is_in([f"{0x5EED00 + i:016x}" for i in range(len(spans_in))])
    )
    assert stored.height == len(spans_in) - 1


def test_concurrent_clients_lose_and_duplicate_nothing(live_ingest):
    before = org_spans(live_ingest).height
    bodies = [
        unique_request(40, seed=1000 + c * 100 + r, shared=10) for c in range(6) for r in range(8)
    ]

    def send(body: bytes) -> int:
        for _ in range(20):  # what an exporter does on 429/503
            status, headers, _ = post(live_ingest["base"], body, auth(live_ingest))
            if status not in (429, 503):
                return status
            time.sleep(float(headers.get("retry-after", "1")))
        return status

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(send, bodies))
    assert statuses == [200] * len(bodies)
    df = org_spans(live_ingest)
    assert df.height - before == len(bodies) * 30 + 10
    assert df.select(pl.struct("trace_id", "span_id").n_unique()).item() == df.height
    engine = live_ingest["engine"]
    with engine.connect() as conn:
        rolled = conn.execute(
            select(
                func.sum(ROLLUPS["1min"].c.span_count), func.sum(ROLLUPS["1min"].c.input_tokens_sum)
            ).where(ROLLUPS["1min"].c.org_id == live_ingest["org_id"])
        ).one()
    assert rolled[0] == df.height and rolled[1] == df["input_tokens"].sum()


def test_demo_traffic_flows_through_the_endpoint(live_ingest):
    engine = live_ingest["engine"]
    deadline = time.time() + 30
    count = 0
    while time.time() < deadline:
        with engine.connect() as conn:
            count = conn.execute(
                select(func.count()).where(spans.c.service_name == "support-bot-live")
            ).scalar()
        if count >= 6:
            break
        time.sleep(1)
    assert count >= 6
    with engine.connect() as conn:
        operations = set(
            conn.execute(
                select(spans.c.operation)
                .where(spans.c.service_name == "support-bot-live")
                .distinct()
            ).scalars()
        )
    assert operations == {"invoke_agent", "embeddings", "chat"}
