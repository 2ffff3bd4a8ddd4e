"""Names real instrumentation libraries send that the conformance suite (tests/conformance) found
unread: each attribute set is what the library was seen sending (see docs/ingestion.md)."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

from tests.ingest.conftest import PROTOBUF
from tests.ingest.test_mapping import decode, one_span_request, reference_cost


def _any(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=value)


def row_of(org_key, attributes: dict) -> dict:
    """The stored row of one span with these attributes (any OTLP value type)."""
    engine, _, _, key = org_key
    request = ExportTraceServiceRequest.FromString(one_span_request({}))
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for name, value in attributes.items():
        span.attributes.add(key=name, value=_any(value))
    (row,) = decode(engine, key, request.SerializeToString(), PROTOBUF).rows
    return row


@pytest.mark.parametrize(
    ("attributes", "user"),
    [
        ({"gen_ai.user": "u-1"}, "u-1"),  # OpenLLMetry: OpenAI's `user` request field
        ({"llm.user": "u-2"}, "u-2"),  # LiteLLM
        ({"ai.telemetry.metadata.userId": "u-3"}, "u-3"),  # Vercel AI SDK
        ({"user.id": "u-4", "gen_ai.user": "other"}, "u-4"),  # the app's own user id wins
    ],
)
def test_the_end_user_from_each_library(org_key, attributes, user):
    row = row_of(org_key, {"gen_ai.operation.name": "chat", **attributes})
    assert row["user_id"] == user
    assert next(iter(attributes)) not in row["attributes"]


def _ai_sdk_call(**extra) -> dict:
    """An `ai.generateText.doGenerate` span as ai 6.0 sends it."""
    return {
        "ai.operationId": "ai.generateText.doGenerate",
        "ai.model.provider": "openai.chat",
        "ai.model.id": "gpt-4o-mini",
        "gen_ai.system": "openai.chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 23,
        "gen_ai.usage.output_tokens": 7,
        "ai.usage.inputTokens": 23,
        "ai.usage.outputTokens": 7,
        "ai.telemetry.metadata.userId": "user-alice",
        "ai.telemetry.metadata.sessionId": "session-alice",
        "ai.prompt.messages": json.dumps(
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
            ]
        ),
        "gen_ai.response.finish_reasons": ["stop"],
        **extra,
    }


def test_a_vercel_ai_sdk_call_span_reads_like_a_genai_chat_span(org_key):
    row = row_of(
        org_key,
        _ai_sdk_call(**{"ai.response.text": "[Paris]", "ai.response.msToFirstChunk": 278.5}),
    )
    assert (row["operation"], row["provider"], row["model"]) == ("chat", "openai", "gpt-4o-mini")
    assert (row["input_tokens"], row["output_tokens"]) == (23, 7)
    assert row["total_cost_usd"] == pytest.approx(reference_cost("openai", "gpt-4o-mini", 23, 7))
    assert (row["user_id"], row["session_id"]) == ("user-alice", "session-alice")
    assert row["input_text"] == "system: You are terse.\nuser: Capital of France?"
    assert row["output_text"] == "[Paris]"  # text that looks like JSON stays as sent
    assert row["ttft_ms"] == pytest.approx(278.5)
    assert row["finish_reason"] == "stop"
    assert row["attributes"]["ai.model.provider"] == "openai.chat"  # the raw name is kept


def test_a_vercel_ai_sdk_wrapper_span_counts_no_call(org_key):
    """ai.generateText repeats its calls' model and usage: read as an `other` span."""
    row = row_of(
        org_key,
        {
            "ai.operationId": "ai.generateText",
            "ai.model.provider": "openai.chat",
            "ai.model.id": "gpt-4o-mini",
            "ai.usage.inputTokens": 98,
            "ai.usage.outputTokens": 21,
            "ai.telemetry.metadata.userId": "user-bob",
            "ai.prompt": json.dumps({"system": "Be terse.", "prompt": "Weather?"}),
            "ai.response.text": "Sunny.",
        },
    )
    assert (row["operation"], row["model"], row["input_tokens"]) == ("other", None, 0)
    assert (row["total_cost_usd"], row["user_id"]) == (0, "user-bob")
    assert (row["input_text"], row["output_text"]) == (
        "system: Be terse.\nuser: Weather?",
        "Sunny.",
    )
    assert "ai.model.id" in row["attributes"]  # kept, not read


def test_vercel_ai_sdk_embeddings_tool_calls_and_results(org_key):
    embed = row_of(
        org_key,
        {
            "ai.operationId": "ai.embed.doEmbed",
            "ai.model.provider": "openai.embedding",
            "ai.model.id": "text-embedding-3-small",
            "ai.usage.tokens": 8,
        },
    )
    assert (embed["operation"], embed["provider"], embed["model"]) == (
        "embeddings",
        "openai",
        "text-embedding-3-small",
    )
    assert embed["input_tokens"] == 8
    calls = json.dumps(
        [{"toolCallId": "c1", "toolName": "get_weather", "input": '{"city": "Paris"}'}]
    )
    asked = row_of(org_key, _ai_sdk_call(**{"ai.response.toolCalls": calls}))
    assert asked["output_text"] == '[tool call get_weather: {"city": "Paris"}]'
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool-call", "toolName": "get_weather", "input": {"city": "P"}}],
        },
        {
            "role": "tool",
            "content": [{"type": "tool-result", "output": {"type": "json", "value": {"sky": 1}}}],
        },
    ]
    answered = row_of(org_key, _ai_sdk_call(**{"ai.prompt.messages": json.dumps(history)}))
    assert answered["input_text"] == (
        'user: Weather?\nassistant: [tool call get_weather: {"city": "P"}]\n'
        'tool: [tool result: {"sky": 1}]'
    )
    tool = row_of(
        org_key,
        {
            "ai.operationId": "ai.toolCall",
            "ai.toolCall.name": "get_weather",
            "ai.toolCall.args": '{"city":"Paris"}',
            "ai.toolCall.result": '{"sky":"sunny"}',
        },
    )
    assert (tool["operation"], tool["input_text"], tool["output_text"]) == (
        "execute_tool",
        '{"city":"Paris"}',
        '{"sky":"sunny"}',
    )


def test_openinference_tool_calls_read_as_text(org_key):
    prefix = "llm.output_messages.0.message"
    row = row_of(
        org_key,
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            f"{prefix}.role": "assistant",
            f"{prefix}.tool_calls.0.tool_call.id": "call_1",
            f"{prefix}.tool_calls.0.tool_call.function.name": "get_weather",
            f"{prefix}.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "Weather?",
            "llm.input_messages.1.message.role": "assistant",
            "llm.input_messages.1.message.tool_calls.0.tool_call.function.name": "get_weather",
            "llm.input_messages.1.message.tool_calls.0.tool_call.function.arguments": "not json",
        },
    )
    assert row["output_text"] == '[tool call get_weather: {"city": "Paris"}]'
    assert row["input_text"] == 'user: Weather?\nassistant: [tool call get_weather: "not json"]'
    assert f"{prefix}.tool_calls.0.tool_call.id" in row["attributes"]  # the call id is kept


@pytest.mark.parametrize(
    ("name", "operation"),
    [("embedding", "embeddings"), ("aembedding", "embeddings"), ("acompletion", "chat")],
)
def test_litellm_call_types_name_the_operation(org_key, name, operation):
    assert row_of(org_key, {"gen_ai.operation.name": name})["operation"] == operation


def test_openinference_first_token_event_gives_the_time_to_first_token(org_key):
    engine, _, _, key = org_key
    request = ExportTraceServiceRequest.FromString(
        one_span_request({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini"})
    )
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.events.add(
        name="First Token Stream Event", time_unix_nano=span.start_time_unix_nano + 278_000_000
    )
    (row,) = decode(engine, key, request.SerializeToString(), PROTOBUF).rows
    assert row["ttft_ms"] == pytest.approx(278)
    assert row_of(org_key, {"openinference.span.kind": "LLM"})["ttft_ms"] is None


@pytest.mark.parametrize("bad", [-5.0, float("nan"), float("inf"), "soon"])
def test_an_impossible_time_to_first_chunk_is_kept_not_read(org_key, bad):
    row = row_of(org_key, _ai_sdk_call(**{"ai.response.msToFirstChunk": bad}))
    assert row["ttft_ms"] is None
    assert "ai.response.msToFirstChunk" in row["attributes"]


def _streamed(org_key, attributes: dict, events: list[tuple[str, int]]) -> dict:
    """One span with these attributes and (name, ms after its start) events."""
    engine, _, _, key = org_key
    request = ExportTraceServiceRequest.FromString(one_span_request({}))
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for name, value in attributes.items():
        span.attributes.add(key=name, value=_any(value))
    for name, ms in events:
        span.events.add(name=name, time_unix_nano=span.start_time_unix_nano + ms * 1_000_000)
    (row,) = decode(engine, key, request.SerializeToString(), PROTOBUF).rows
    return row


def test_openllmetry_chunk_events_give_the_first_token_and_are_kept_once(org_key):
    """OpenLLMetry adds an event per streamed chunk: the first one is the first token; the
    stored span keeps one entry with the count, not one per chunk."""
    chunks = [("gen_ai.content.completion.chunk", ms) for ms in (412, 300, 455, 460, 470)]
    row = _streamed(org_key, {"gen_ai.operation.name": "chat"}, chunks)
    assert row["ttft_ms"] == pytest.approx(300)
    (kept,) = row["attributes"]["otel.events"]
    assert kept["name"] == "gen_ai.content.completion.chunk"
    assert kept["count"] == 5 and kept["offset_ms"] == pytest.approx(300)


@pytest.mark.parametrize(
    ("attributes", "events", "ttft"),
    [
        # the Vercel AI SDK's GenAI telemetry, in seconds
        ({"gen_ai.client.operation.time_to_first_chunk": 0.25}, [], 250),
        # its legacy streamObject name, in milliseconds
        (_ai_sdk_call(**{"ai.stream.msToFirstChunk": 180}), [], 180),
        # its own first-chunk event
        ({"gen_ai.operation.name": "chat"}, [("ai.stream.firstChunk", 90)], 90),
        # an attribute wins over an event
        (
            {"gen_ai.response.time_to_first_chunk": 0.5},
            [("gen_ai.content.completion.chunk", 90)],
            500,
        ),
    ],
)
def test_time_to_first_token_from_each_way_a_library_says_it(org_key, attributes, events, ttft):
    assert _streamed(org_key, attributes, events)["ttft_ms"] == pytest.approx(ttft)
