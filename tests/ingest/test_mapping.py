"""The shared SDK payloads decode to the spans they describe, in both encodings and both
attribute conventions; older GenAI names map too; what is not mapped is kept, bounded."""

from __future__ import annotations

from datetime import UTC, datetime

import genai_prices
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from observatory_core.ingest.receiver import Receiver
from tests.ingest.conftest import JSON, PROTOBUF, sample

SAMPLES = [
    ("genai.pb", PROTOBUF),
    ("genai.json", JSON),
    ("openinference.pb", PROTOBUF),
    ("openinference.json", JSON),
]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def decode(engine, key, body: bytes, kind: str):
    headers = {"content-type": kind, "authorization": f"Bearer {key}"}
    return Receiver(engine).decode(body, headers, now=NOW)


def reference_cost(provider: str, model: str, tokens_in: int, tokens_out: int) -> float:
    """Straight from the maintained price table, not through our price cache."""
    price = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=tokens_in, output_tokens=tokens_out),
        model,
        provider_id=provider,
    )
    return float(price.total_price)


@pytest.mark.parametrize(("name", "kind"), SAMPLES)
def test_sample_payloads_decode_to_the_expected_spans(org_key, name, kind):
    engine, org_id, _, key = org_key
    decoded = decode(engine, key, sample(name), kind)
    assert decoded.rejected == 0
    rows = {r["name"]: r for r in decoded.rows}
    assert len(rows) == 5
    root = rows["invoke_agent support-bot"]
    assert root["parent_span_id"] is None and root["operation"] == "invoke_agent"
    assert {r["trace_id"] for r in rows.values()} == {root["trace_id"]}
    assert all(r["parent_span_id"] == root["span_id"] for r in rows.values() if r is not root)

    chat = rows["chat gpt-4o-mini"]
    assert (chat["provider"], chat["model"], chat["operation"]) == ("openai", "gpt-4o-mini", "chat")
    assert (chat["input_tokens"], chat["output_tokens"], chat["total_tokens"]) == (412, 96, 508)
    assert chat["total_cost_usd"] == pytest.approx(reference_cost("openai", "gpt-4o-mini", 412, 96))
    assert chat["cost_source"] == "computed"
    assert chat["input_text"] == "My invoice shows a double charge for March. Can you help?"
    assert chat["output_text"].startswith("I am sorry about that. I can see two charges on 3 March")
    assert (chat["user_id"], chat["session_id"]) == ("user_1042", "sess_7f3a")
    assert (chat["environment"], chat["service_name"]) == ("production", "support-bot")
    assert chat["status"] == "unset" and chat["error_message"] is None
    assert chat["duration_ms"] == pytest.approx(1840.0)

    failed = rows["chat claude-sonnet-4"]
    assert failed["status"] == "error"
    assert failed["error_message"] == "overloaded_error: upstream capacity"
    assert failed["error_type"] == "RuntimeError"
    assert (failed["provider"], failed["input_tokens"], failed["output_tokens"]) == (
        "anthropic",
        1288,
        0,
    )
    assert failed["total_cost_usd"] == pytest.approx(
        reference_cost("anthropic", "claude-sonnet-4-20250514", 1288, 0)
    )

    embed = rows["embeddings text-embedding-3-small"]
    assert embed["operation"] == "embeddings" and embed["input_tokens"] == 37
    assert embed["total_cost_usd"] == pytest.approx(
        reference_cost("openai", "text-embedding-3-small", 37, 0)
    )
    assert rows["execute_tool lookup_invoice"]["operation"] == "execute_tool"
    assert all(r["org_id"] == org_id for r in rows.values())


@pytest.mark.parametrize("convention", ["genai", "openinference"])
def test_protobuf_and_json_give_the_same_rows(org_key, convention):
    engine, _, _, key = org_key
    from_pb = decode(engine, key, sample(f"{convention}.pb"), PROTOBUF).rows
    from_json = decode(engine, key, sample(f"{convention}.json"), JSON).rows
    assert from_pb == from_json


def test_openinference_tags_and_metadata(org_key):
    engine, _, _, key = org_key
    rows = decode(engine, key, sample("openinference.json"), JSON).rows
    chat = next(r for r in rows if r["name"] == "chat gpt-4o-mini")
    assert chat["tags"] == ["support", "beta"]
    assert chat["metadata"] == {"feature": "support-bot", "ab_group": "B"}
    assert "input.value" not in chat["attributes"] and "llm.model_name" not in chat["attributes"]


def kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def one_span_request(attributes: dict, **span_fields) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(kv("service.name", "legacy-app"))
    span = resource_spans.scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    span.span_id = bytes.fromhex("b7ad6b7169203331")
    span.name = "legacy chat"
    span.start_time_unix_nano = int(NOW.timestamp() * 1e9) - 2_000_000_000
    span.end_time_unix_nano = int(NOW.timestamp() * 1e9) - 1_000_000_000
    for key, value in span_fields.items():
        setattr(span, key, value)
    span.attributes.extend(kv(k, v) for k, v in attributes.items())
    return request.SerializeToString()


def test_older_genai_names_map_like_the_current_ones(org_key):
    engine, _, _, key = org_key
    body = one_span_request(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 120,
            "gen_ai.usage.completion_tokens": 30,
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Be brief.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "What is 2+2?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "4",
            "gen_ai.operation.name": "chat",
            "enduser.id": "u-9",
        }
    )
    (row,) = decode(engine, key, body, PROTOBUF).rows
    assert (row["provider"], row["model"]) == ("openai", "gpt-4o")
    assert (row["input_tokens"], row["output_tokens"]) == (120, 30)
    assert row["input_text"] == "system: Be brief.\nuser: What is 2+2?"
    assert row["output_text"] == "4"
    assert row["user_id"] == "u-9"
    assert row["total_cost_usd"] == pytest.approx(reference_cost("openai", "gpt-4o", 120, 30))
    assert not [k for k in row["attributes"] if k.startswith("gen_ai.")]


def test_reported_cost_wins_and_unknown_models_are_kept_unpriced(org_key):
    engine, _, _, key = org_key
    reported = one_span_request({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.cost": "0.5"})
    (row,) = decode(engine, key, reported, PROTOBUF).rows
    assert (row["total_cost_usd"], row["cost_source"]) == (0.5, "reported")
    unknown = one_span_request(
        {"gen_ai.request.model": "our-own-ft", "gen_ai.usage.input_tokens": 9}
    )
    (row,) = decode(engine, key, unknown, PROTOBUF).rows
    assert (row["model"], row["cost_source"], row["total_cost_usd"]) == (
        "our-own-ft",
        "unpriced",
        0,
    )


def test_unmapped_attributes_are_kept_and_huge_ones_cut(org_key):
    engine, _, _, key = org_key
    many = {f"app.field_{i:03}": i for i in range(300)}
    body = one_span_request({"app.blob": "x" * 100_000, "app.flag": True, **many})
    (row,) = decode(engine, key, body, PROTOBUF).rows
    attributes = row["attributes"]
    assert len(attributes["app.blob"]) == 4096
    assert attributes["app.flag"] is True
    assert attributes["observatory.cut_attributes"] == ["app.blob"]
    assert attributes["observatory.dropped_attributes"] == 302 + 2 - 128
    assert "resource" not in attributes  # service.name was its only attribute, and it is mapped


def test_a_failed_openinference_call_keeps_its_model_and_readable_messages(org_key):
    """OpenInference names a failed call's model only in its invocation parameters, and sends
    the raw request JSON as input.value beside the readable per-message attributes."""
    import json

    engine, _, _, key = org_key
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi there"}]}
    body = one_span_request(
        {
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.invocation_parameters": json.dumps({"model": "gpt-4o-mini", "temperature": 0}),
            "input.value": json.dumps(request),
            "input.mime_type": "application/json",
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "Be kind.",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.content": "Hi there",
        }
    )
    failed = ExportTraceServiceRequest.FromString(body)
    failed.resource_spans[0].scope_spans[0].spans[0].status.code = 2
    failed.resource_spans[0].scope_spans[0].spans[0].status.message = "Error code: 500"
    (row,) = decode(engine, key, failed.SerializeToString(), PROTOBUF).rows
    assert (row["operation"], row["provider"], row["model"]) == ("chat", "openai", "gpt-4o-mini")
    assert (row["status"], row["error_message"]) == ("error", "Error code: 500")
    assert row["input_text"] == "system: Be kind.\nuser: Hi there"
    assert json.loads(row["attributes"]["input.value"]) == request  # the raw request is kept

    answered = one_span_request(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini-2024-07-18",
            "llm.invocation_parameters": json.dumps({"model": "gpt-4o-mini"}),
            "output.value": json.dumps({"choices": [{"message": {"content": "Hello!"}}]}),
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Hello!",
            "llm.output_messages.0.message.finish_reason": "stop",
        }
    )
    (row,) = decode(engine, key, answered, PROTOBUF).rows
    assert row["model"] == "gpt-4o-mini-2024-07-18"  # the model attribute wins when present
    assert (row["output_text"], row["finish_reason"]) == ("Hello!", "stop")


@pytest.mark.parametrize(
    ("attributes", "operation"),
    [
        ({"llm.request.type": "chat"}, "chat"),
        ({"llm.request.type": "completion"}, "completion"),
        ({"llm.request.type": "embedding"}, "embeddings"),
        ({"traceloop.span.kind": "tool"}, "execute_tool"),
        ({"traceloop.span.kind": "agent"}, "invoke_agent"),
        ({"traceloop.span.kind": "workflow"}, "other"),
        ({"llm.request.type": "chat", "gen_ai.operation.name": "embeddings"}, "embeddings"),
    ],
)
def test_traceloop_request_types_and_span_kinds_name_the_operation(org_key, attributes, operation):
    engine, _, _, key = org_key
    (row,) = decode(engine, key, one_span_request(attributes), PROTOBUF).rows
    assert row["operation"] == operation
    assert not {"llm.request.type", "traceloop.span.kind"} & set(row["attributes"])


def test_traceloop_association_properties_give_user_session_and_metadata(org_key):
    engine, _, _, key = org_key
    body = one_span_request(
        {
            "llm.request.type": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 10,
            "gen_ai.usage.completion_tokens": 5,
            "llm.usage.total_tokens": 15,
            "traceloop.association.properties.user_id": "u-77",
            "traceloop.association.properties.session_id": "s-12",
            "traceloop.association.properties.customer": "acme-corp",
        }
    )
    (row,) = decode(engine, key, body, PROTOBUF).rows
    assert (row["user_id"], row["session_id"]) == ("u-77", "s-12")
    assert row["metadata"] == {"customer": "acme-corp"}
    assert (row["input_tokens"], row["output_tokens"]) == (10, 5)
    assert not [k for k in row["attributes"] if k.startswith("traceloop.")]


def test_a_failed_call_shows_its_exception_message_and_keeps_the_stack_trace(org_key):
    """Traceloop/OpenLLMetry records the failure as an `exception` event (status without a
    message): the message is the span's error and the stack trace is kept for the detail."""
    engine, _, _, key = org_key
    request = ExportTraceServiceRequest.FromString(
        one_span_request({"llm.request.type": "chat", "gen_ai.request.model": "gpt-4o"})
    )
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.status.code = 2
    event = span.events.add(name="exception", time_unix_nano=span.start_time_unix_nano)
    event.attributes.extend(
        [
            kv("exception.type", "openai.RateLimitError"),
            kv("exception.message", "Error code: 429 - rate limited"),
            kv("exception.stacktrace", "Traceback (most recent call last):\n  ..."),
        ]
    )
    (row,) = decode(engine, key, request.SerializeToString(), PROTOBUF).rows
    assert (row["status"], row["operation"]) == ("error", "chat")
    assert row["error_type"] == "openai.RateLimitError"
    assert row["error_message"] == "Error code: 429 - rate limited"
    assert row["attributes"]["exception.stacktrace"].startswith("Traceback")


def test_a_litellm_tool_call_reads_as_a_tool_call(org_key):
    """LiteLLM's otel callback sends a tool call only as gen_ai.completion.N.function_call.*."""
    engine, _, _, key = org_key
    body = one_span_request(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.function_call.name": "get_weather",
            "gen_ai.completion.0.function_call.arguments": '{"city": "Paris"}',
        }
    )
    (row,) = decode(engine, key, body, PROTOBUF).rows
    assert row["output_text"] == '[tool call get_weather: {"city": "Paris"}]'
    assert row["finish_reason"] == "tool_calls"
    assert not [k for k in row["attributes"] if k.startswith("gen_ai.completion")]
