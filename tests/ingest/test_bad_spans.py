"""A bad span costs only itself (issue 25 part 2), on both databases: NUL characters anywhere
in a span are stored as U+FFFD, and a span that cannot be stored is refused alone, named in
OTLP's partial success, while its batch-mates are stored."""

from __future__ import annotations

import json
import time

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from sqlalchemy import func, select

from observatory_core.ingest.importer import import_file
from observatory_core.ingest.otlp import parse_request
from observatory_core.ingest.receiver import Receiver
from observatory_core.storage.schema import spans
from tests.helpers import assert_rollups_match_rebuild, make_org
from tests.ingest.conftest import JSON, PROTOBUF

FFFD = "\ufffd"
N = 100


def s(value: str) -> dict:
    return {"stringValue": value}


def nul_span(i: int, t0: int) -> dict:
    """A span with a NUL in each place a sender can put one."""
    return {
        "traceId": f"{i + 1:032x}",
        "spanId": f"{i + 1:016x}",
        "name": f"tool\x00call {i}",
        "kind": 3,
        "startTimeUnixNano": str(t0 + i * 1000),
        "endTimeUnixNano": str(t0 + i * 1000 + 5_000_000),
        "attributes": [
            {"key": "gen_ai.operation.name", "value": s("execute_tool")},
            {"key": "k\x00ey", "value": s(f"v\x00al {i}")},
            {"key": "gen_ai.input.messages", "value": s(f"prompt\x00 {i}")},
            {"key": "gen_ai.output.messages", "value": s("tool out\x00put\x00")},
            {"key": "user.id", "value": s("u\x001")},
            {
                "key": "nested",
                "value": {
                    "kvlistValue": {
                        "values": [
                            {"key": "in\x00ner", "value": {"arrayValue": {"values": [s("a\x00")]}}}
                        ]
                    }
                },
            },
        ],
        "events": [
            {
                "name": "tool\x00event",
                "timeUnixNano": str(t0 + i * 1000 + 1),
                "attributes": [{"key": "o\x00ut", "value": s("x\x00y")}],
            },
            {
                "name": "exception",
                "attributes": [
                    {"key": "exception.type", "value": s("Tool\x00Error")},
                    {"key": "exception.message", "value": s("exc\x00message")},
                ],
            },
        ],
        "status": {"code": 2, "message": "fail\x00ed"},
    }


def nul_request(extra_spans: list[dict] = ()) -> dict:
    t0 = time.time_ns() - 60 * 10**9
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": s("svc\x00bot")},
                        {"key": "host\x00.name", "value": s("h\x00")},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "scope\x00lib"},
                        "spans": [nul_span(i, t0) for i in range(N)] + list(extra_spans),
                    }
                ],
            }
        ]
    }


def as_protobuf(doc: dict) -> bytes:
    parsed = parse_request(json.dumps(doc).encode(), JSON)
    assert parsed.rejected == 0
    return parsed.request.SerializeToString()


def stored(engine, org_id: int) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(spans).where(spans.c.org_id == org_id)).mappings().all()
    return sorted((dict(r) for r in rows), key=lambda r: r["span_id"])


def partial(kind: str, body: bytes):
    if kind == PROTOBUF:
        return ExportTraceServiceResponse.FromString(body).partial_success
    response = ExportTraceServiceResponse()
    json_format.Parse(body, response)
    return response.partial_success


def assert_nul_spans_stored(engine, org_id: int) -> None:
    assert_nul_rows(stored(engine, org_id))


def assert_nul_rows(rows: list[dict]) -> None:
    """`nul_request`'s spans as stored, sorted by span id: every NUL a U+FFFD."""
    assert len(rows) == N
    # not one NUL left anywhere (repr would escape it: the text itself is searched)
    assert not [r for r in rows if "\x00" in json.dumps(r, default=str, ensure_ascii=False)]
    for i, row in enumerate(rows):
        assert row["span_id"] == f"{i + 1:016x}"
        assert row["name"] == f"tool{FFFD}call {i}"
        assert row["input_text"] == f"prompt{FFFD} {i}"
        assert row["output_text"] == f"tool out{FFFD}put{FFFD}"
        assert (row["service_name"], row["user_id"]) == (f"svc{FFFD}bot", f"u{FFFD}1")
        assert (row["error_type"], row["error_message"]) == (f"Tool{FFFD}Error", f"fail{FFFD}ed")
        attributes = row["attributes"]
        assert attributes[f"k{FFFD}ey"] == f"v{FFFD}al {i}"
        assert attributes["nested"] == {f"in{FFFD}ner": [f"a{FFFD}"]}
        assert attributes["resource"] == {f"host{FFFD}.name": f"h{FFFD}"}
        assert attributes["otel.scope.name"] == f"scope{FFFD}lib"
        assert attributes["otel.events"] == [
            {
                "name": f"tool{FFFD}event",
                "attributes": {f"o{FFFD}ut": f"x{FFFD}y"},
                "offset_ms": pytest.approx(1e-6),  # 1 ns after the span's start
            }
        ]


@pytest.mark.parametrize("kind", [JSON, PROTOBUF])
def test_nul_characters_everywhere_store_all_spans_as_replacement_characters(route, kind):
    send, engine, org_id = route
    doc = nul_request()
    body = json.dumps(doc).encode() if kind == JSON else as_protobuf(doc)
    status, _, reply = send(body, kind)
    assert status == 200 and partial(kind, reply).rejected_spans == 0
    assert_nul_spans_stored(engine, org_id)
    assert_rollups_match_rebuild(engine)


def test_a_span_that_cannot_be_read_is_refused_alone_and_named(route):
    """An int attribute over 2^63 (legal JSON, not an OTLP int) and a start time that is no
    integer: those two spans are refused, the 100 others stored."""
    send, engine, org_id = route
    t0 = time.time_ns() - 10**9
    overflow = dict(nul_span(500, t0), name="too big")
    overflow["attributes"] = [{"key": "count", "value": {"intValue": 2**64}}]
    bad_time = dict(nul_span(501, t0), name="bad time", startTimeUnixNano="soon")
    doc = nul_request([overflow, bad_time])
    status, _, reply = send(json.dumps(doc).encode())
    assert status == 200
    answer = partial(JSON, reply)
    assert answer.rejected_spans == 2
    assert "span 'too big' (00000000000001f5)" in answer.error_message
    assert "out of range" in answer.error_message and "'bad time'" in answer.error_message
    assert_nul_spans_stored(engine, org_id)


def test_a_span_the_database_refuses_is_refused_alone_and_named(route, monkeypatch):
    """The writer's last line of defence: a row the database refuses (here one made to break
    a NOT NULL constraint after the mapping) costs only itself, on every store."""
    send, engine, org_id = route
    real_map = Receiver.map_request

    def poisoning(self, *args, **kwargs):
        decoded = real_map(self, *args, **kwargs)
        decoded.rows[40]["operation"] = None
        return decoded

    monkeypatch.setattr(Receiver, "map_request", poisoning)
    status, _, reply = send(as_protobuf(nul_request()), PROTOBUF)
    assert status == 200
    answer = partial(PROTOBUF, reply)
    assert answer.rejected_spans == 1
    assert f"span 'tool{FFFD}call 40' (0000000000000029)" in answer.error_message
    assert "the database refused it" in answer.error_message
    rows = stored(engine, org_id)
    assert len(rows) == N - 1 and "0000000000000029" not in {r["span_id"] for r in rows}
    assert_rollups_match_rebuild(engine)


def test_import_stores_nul_spans_and_names_the_ones_it_refuses(engine, tmp_path):
    org_id, _ = make_org(engine, "acme", ("default",))
    overflow = dict(nul_span(500, time.time_ns() - 10**9), name="too big")
    overflow["attributes"] = [{"key": "count", "value": {"intValue": str(2**64)}}]
    path = tmp_path / "traces.json"
    path.write_text(json.dumps(nul_request([overflow])))
    report = import_file(engine, org_id, path)
    assert (report.read, report.stored, report.rejected) == (N + 1, N, 1)
    assert "'too big'" in report.reasons[0]
    assert_nul_spans_stored(engine, org_id)


def test_import_of_an_export_names_the_row_the_database_refuses(engine, tmp_path):
    """An exported row with a token count no integer column holds: refused alone."""
    org_id, _ = make_org(engine, "acme", ("default",))
    path = tmp_path / "spans.jsonl"
    lines = []
    for i in range(3):
        lines.append(
            {
                "trace_id": f"{i + 1:032x}",
                "span_id": f"{i + 1:016x}",
                "name": f"row\x00{i}",
                "start_time": "2026-11-20T10:00:00+00:00",
                "end_time": "2026-11-20T10:00:01+00:00",
                "input_tokens": 2**70 if i == 1 else 10,
            }
        )
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report = import_file(engine, org_id, path)
    assert (report.read, report.stored, report.rejected) == (3, 2, 1)
    assert f"span 'row{FFFD}1' (0000000000000002): the database refused it" in report.reasons[0]
    with engine.connect() as conn:
        names = set(conn.execute(select(spans.c.name)).scalars())
        total = conn.execute(select(func.sum(spans.c.input_tokens))).scalar()
    assert names == {f"row{FFFD}0", f"row{FFFD}2"} and total == 20
    assert_rollups_match_rebuild(engine)


def test_odd_values_where_a_convention_expects_text_cost_nothing(route):
    """`ai.operationId` as a list or a map (no SDK sends one) was a TypeError in the AI SDK
    convention and an HTTP 500 for the whole request: such a span is stored as a plain span."""
    send, engine, org_id = route
    t0 = time.time_ns() - 10**9
    odd = [
        dict(nul_span(600, t0), name="op list"),
        dict(nul_span(601, t0), name="op map"),
    ]
    odd[0]["attributes"] = [
        {"key": "ai.operationId", "value": {"arrayValue": {"values": [s("ai.generateText")]}}}
    ]
    odd[1]["attributes"] = [
        {
            "key": "ai.operationId",
            "value": {"kvlistValue": {"values": [{"key": "a", "value": s("b")}]}},
        }
    ]
    status, _, reply = send(json.dumps(nul_request(odd)).encode())
    assert status == 200 and partial(JSON, reply).rejected_spans == 0
    rows = stored(engine, org_id)
    assert len(rows) == N + 2
    assert {r["name"]: r["operation"] for r in rows if r["name"].startswith("op ")} == {
        "op list": "other",
        "op map": "other",
    }


def test_a_fault_of_ours_in_the_mapping_costs_only_that_span(route, monkeypatch):
    """Whatever a convention raises on one span (here a TypeError for one name), that span is
    refused alone and named; its 100 batch-mates are stored and the request answers 200."""
    from observatory_core.ingest import mapping

    send, engine, org_id = route
    real = mapping.map_span

    def failing(span, *args, **kwargs):
        if span.name == "breaks us":
            raise TypeError("unhashable type: 'list'")
        return real(span, *args, **kwargs)

    monkeypatch.setattr("observatory_core.ingest.receiver.map_span", failing)
    t0 = time.time_ns() - 10**9
    doc = nul_request([dict(nul_span(700, t0), name="breaks us")])
    status, _, reply = send(json.dumps(doc).encode())
    assert status == 200
    answer = partial(JSON, reply)
    assert answer.rejected_spans == 1
    assert "span 'breaks us' (00000000000002bd)" in answer.error_message
    assert "an error of ours" in answer.error_message
    assert_nul_spans_stored(engine, org_id)
