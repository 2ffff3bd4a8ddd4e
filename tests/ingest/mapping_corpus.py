"""A fixed corpus of OTLP requests for the mapping's snapshot test (test_mapping_snapshot.py):
the shared SDK samples, bench-shaped batches, and seeded random spans built from every
convention's attribute names, with the values that exercise each rule of docs/ingestion.md
(types, empty values, NUL, long and deep values, events, bad ids and times, twins of a name).

Deterministic: the same requests on every run, so the rows they map to can be recorded once and
compared byte for byte after a change meant to keep them the same.
"""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime
from unittest import mock

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from bench.ingest_case import build_bodies
from observatory_core.ingest import conventions as cv
from tests.ingest.conftest import JSON, PROTOBUF, sample

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW_NS = int(NOW.timestamp()) * 10**9
PROJECT = "support-bot"  # created in the test's org; any other observatory.project is refused
PRICED_MODEL = ("openai", "gpt-4o-mini")  # the org has its own price for it

_CONVENTION_NAMES = sorted({name for _, table in cv.CONVENTIONS for name in table})
_OTHER_NAMES = [
    cv.OPENINFERENCE_KIND,
    cv.TRACELOOP_REQUEST_TYPE,
    cv.TRACELOOP_KIND,
    cv.AI_SDK_OPERATION,
    cv.INVOCATION_PARAMETERS,
    "ai.model.id",
    "ai.model.provider",
    "ai.usage.tokens",
    "ai.prompt",
    "ai.prompt.messages",
    "ai.response.text",
    "ai.response.toolCalls",
    "ai.response.msToFirstChunk",
    "ai.stream.msToFirstChunk",
    "ai.toolCall.args",
    "ai.toolCall.result",
    "langfuse.metadata.team",
    "traceloop.association.properties.tenant",
    "input.mime_type",
    "output.mime_type",
    "gen_ai.prompt.0.role",
    "gen_ai.prompt.0.content",
    "gen_ai.prompt.1.content",
    "gen_ai.completion.0.content",
    "gen_ai.completion.0.finish_reason",
    "gen_ai.completion.0.function_call.name",
    "gen_ai.completion.0.function_call.arguments",
    "llm.input_messages.0.message.role",
    "llm.input_messages.0.message.content",
    "llm.input_messages.1.message.tool_calls.0.tool_call.function.name",
    "llm.output_messages.0.message.content",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments",
    "exception.stacktrace",
    "http.route",
    "custom.note",
]
NAMES = _CONVENTION_NAMES + _OTHER_NAMES
_NUMBERS = set(cv.INPUT_TOKENS + cv.OUTPUT_TOKENS + cv.TOTAL_TOKENS + cv.COST) | {"ai.usage.tokens"}
_TEXTS = [
    "chat",
    "CHAT",
    "embeddings",
    "invoke_agent",
    "execute_tool",
    "LLM",
    "EMBEDDING",
    "TOOL",
    "workflow",
    "agent",
    "openai",
    "openai.chat",
    "anthropic",
    "gpt-4o-mini",
    "claude-sonnet-4-5",
    "text-embedding-3-small",
    "unknown-model-x",
    "stop",
    "ai.generateText.doGenerate",
    "ai.streamText.doStream",
    "ai.embed.doEmbed",
    "ai.generateText",
    "ai.toolCall",
    "12",
    "3.5",
    "-4",
    "abc",
    "",
    "tab\x00nul",
    "\x00",
    "x" * 4100,
    "é" * 210,
    json.dumps([{"role": "user", "content": "Hello?"}]),
    json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Hi."}]}]),
    json.dumps(
        [{"role": "user", "content": [{"type": "tool-result", "output": {"value": {"a": 1}}}]}]
    ),
    json.dumps([{"parts": [{"type": "tool_call", "name": "f", "arguments": {"x": 1}}]}]),
    json.dumps({"system": "Be terse.", "prompt": "Weather?"}),
    json.dumps({"model": "gpt-4o", "temperature": 0}),
    json.dumps({"team": "a", "n": 1}),
    json.dumps(["stop", "length"]),
    json.dumps([{"toolCallId": "c1", "toolName": "w", "input": '{"city": "Paris"}'}]),
    "[not json",
    "{}",
]


def _value(rng: random.Random, depth: int = 0) -> AnyValue:
    kind = rng.randrange(13)
    if kind <= 4:
        return AnyValue(string_value=rng.choice(_TEXTS))
    if kind == 5:
        return AnyValue(int_value=rng.choice([0, 1, 7, 412, -3, 2_000_000_001, 2**62]))
    if kind == 6:
        return AnyValue(double_value=rng.choice([0.0, 0.25, 1.5, -1.0, 1e12, float("nan")]))
    if kind == 7:
        return AnyValue(bool_value=rng.random() < 0.5)
    if kind == 8:
        return AnyValue(bytes_value=bytes([rng.randrange(256) for _ in range(3)]))
    if kind == 9:
        if depth == 0 and rng.random() < 0.1:  # past the 128 kept items
            return AnyValue(
                array_value=ArrayValue(values=[AnyValue(int_value=i) for i in range(130)])
            )
        items = [_value(rng, depth + 1) for _ in range(rng.randrange(3) if depth < 2 else 0)]
        return AnyValue(array_value=ArrayValue(values=items))
    if kind == 10:
        pairs = [
            KeyValue(key=rng.choice(["a", "b\x00", "c"]), value=_value(rng, depth + 1))
            for _ in range(rng.randrange(3) if depth < 2 else 0)
        ]
        return AnyValue(kvlist_value=KeyValueList(values=pairs))
    if kind == 11:
        return _deep(20)
    return AnyValue()  # no value at all


def _deep(levels: int) -> AnyValue:
    value = AnyValue(string_value="bottom")
    for _ in range(levels):
        value = AnyValue(array_value=ArrayValue(values=[value]))
    return value


def _span(rng: random.Random, out, n: int) -> None:
    span = out.spans.add()
    span.trace_id = (n // 3 + 1).to_bytes(16, "big")
    span.span_id = (n + 1).to_bytes(8, "big")
    if n % 3:
        span.parent_span_id = (n // 3 * 3 + 1).to_bytes(8, "big")
    start = NOW_NS - rng.randrange(1, 3600) * 10**9
    span.start_time_unix_nano = start
    span.end_time_unix_nano = start + rng.randrange(0, 5000) * 10**6
    span.name = rng.choice(["chat gpt-4o-mini", "", "agent", "n\x00ul", "long " * 60])
    span.kind = rng.randrange(7)
    span.status.code = rng.choice([0, 1, 2, 2])
    span.status.message = rng.choice(["", "overloaded", "bad\x00thing"])
    bad = rng.randrange(40)
    if bad == 0:
        span.trace_id = b"\x00" * 16
    elif bad == 1:
        span.span_id = b"\x01" * 7
    elif bad == 2:
        span.start_time_unix_nano = 0
    elif bad == 3:
        span.end_time_unix_nano = start - 1
    elif bad == 4:
        span.start_time_unix_nano = 5 * 10**17  # 1985
    elif bad == 5:
        span.parent_span_id = b"\x02" * 3
    names = rng.sample(NAMES, rng.randrange(1, 14))
    if rng.random() < 0.3:  # a field under two of its names, same or different value
        field_names = rng.choice([cv.MODEL, cv.PROVIDER, cv.INPUT_TOKENS, cv.USER, cv.SESSION])
        value = _value(rng)
        for name in field_names[:2]:
            span.attributes.add(key=name, value=value)
    for name in names:
        # ai.operationId only as text: a list or map there fails the request (a TypeError in
        # conventions.ai_sdk), a fault of its own, not what this corpus records
        value = _value(rng)
        if name == cv.AI_SDK_OPERATION:
            value = AnyValue(string_value=rng.choice(_TEXTS))
        elif name in _NUMBERS and rng.random() < 0.85:  # mostly counts that pass, some that do not
            value = AnyValue(int_value=rng.choice([0, 3, 412, 96, 150_000]))
        span.attributes.add(key=name, value=value)
    if rng.random() < 0.03:  # past the 128 kept keys
        for i in range(140):
            span.attributes.add(key=f"extra.{i}", value=AnyValue(int_value=i))
    for _ in range(rng.choice([0, 0, 1, 3])):
        event = span.events.add()
        event.name = rng.choice(
            [
                "exception",
                "gen_ai.content.prompt",
                "gen_ai.content.completion",
                "gen_ai.content.completion.chunk",
                "llm.content.completion.chunk",
                "First Token Stream Event",
                "ai.stream.firstChunk",
                "log",
            ]
        )
        event.time_unix_nano = start + rng.randrange(-5, 900) * 10**6
        for key in rng.sample(
            [
                "exception.type",
                "exception.message",
                "exception.stacktrace",
                "gen_ai.prompt",
                "gen_ai.completion",
                "detail",
            ],
            rng.randrange(3),
        ):
            event.attributes.add(key=key, value=_value(rng))


def random_request(seed: int, spans: int = 40) -> bytes:
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    n = seed * 1000
    for r in range(rng.randrange(1, 4)):
        resource = request.resource_spans.add()
        attrs = resource.resource.attributes
        attrs.add(key="service.name", value=AnyValue(string_value=rng.choice(["app", "s\x00vc"])))
        if rng.random() < 0.5:
            env = rng.choice(["production", "", "e" * 80])
            attrs.add(key="deployment.environment.name", value=AnyValue(string_value=env))
        if rng.random() < 0.3:
            project = rng.choice([PROJECT, "missing-project", "default"])
            attrs.add(key="observatory.project", value=AnyValue(string_value=project))
        if rng.random() < 0.5:
            attrs.add(key="host.name", value=_value(rng))
        if rng.random() < 0.2:
            attrs.add(key="host.tags", value=_deep(20))
        for s in range(rng.randrange(1, 3)):
            out = resource.scope_spans.add()
            out.scope.name = rng.choice(["openinference.instrumentation.openai", "", "sc\x00pe"])
            for _ in range(spans // (r + s + 1)):
                n += 1
                _span(rng, out, n)
    return request.SerializeToString()


def as_json(body: bytes) -> bytes:
    """The same request in OTLP/JSON (ids as hex, as the specification asks)."""
    doc = json_format.MessageToDict(ExportTraceServiceRequest.FromString(body))
    for resource in doc.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    return json.dumps(doc).encode()


def corpus() -> list[tuple[str, bytes, str]]:
    """(case name, body, media type) for every request of the corpus."""
    cases = [(name, sample(name), kind) for name, kind in _SAMPLES]
    with mock.patch("bench.ingest_case.time.time_ns", return_value=NOW_NS):  # fixed times
        bench = build_bodies(1, 3)[0]
    cases += [("bench.pb", bench, PROTOBUF), ("bench.json", as_json(bench), JSON)]
    for seed in range(1, 41):
        body = random_request(seed)
        cases.append((f"random-{seed}.pb", body, PROTOBUF))
        if seed % 4 == 0:
            cases.append((f"random-{seed}.json", as_json(body), JSON))
    return cases


_SAMPLES = [
    ("genai.pb", PROTOBUF),
    ("genai.json", JSON),
    ("openinference.pb", PROTOBUF),
    ("openinference.json", JSON),
]
