"""What every Python conformance client shares: the OTel SDK with its own OTLP/HTTP exporter
pointed at our receiver, the fake API's address, and the calls each client makes.

Run only as a client script's helper, inside the conformance virtualenv; configured by the
environment the test sets: CONFORMANCE_OTLP (the receiver's /v1/traces), CONFORMANCE_KEY (an
ingest key), CONFORMANCE_API (the fake API's base URL for this client), OTEL_SERVICE_NAME.
"""

from __future__ import annotations

import json
import os
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

API = os.environ["CONFORMANCE_API"]
CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
# Who makes which call: alice chats (plain and streamed); bob uses a tool, embeds, and fails.
ALICE = ("user-alice", "session-alice")
BOB = ("user-bob", "session-bob")
QUESTION = "What is the capital of France?"
STREAM_QUESTION = "Say hello from Paris."
TOOL_QUESTION = "What is the weather in Paris?"
EMBED_TEXT = "The capital of France"
FAIL_429 = "Please answer FAIL_429"
FAIL_500 = "Please answer FAIL_500"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class Attributes(SpanProcessor):
    """Puts fixed attributes on every span as it starts: how an app adds user and session where
    the instrumentation has no way of its own (the Traceloop SDK does the same for association
    properties; OpenTelemetry's baggage span processor does it from baggage)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def on_start(self, span, parent_context=None) -> None:
        for key, value in self.values.items():
            span.set_attribute(key, value)


def tracer_provider(*processors: SpanProcessor) -> TracerProvider:
    """The global tracer provider exporting with the SDK's own OTLP/HTTP (protobuf) exporter."""
    provider = TracerProvider(
        resource=Resource.create({"deployment.environment.name": "conformance"})
    )
    for processor in processors:
        provider.add_span_processor(processor)
    exporter = OTLPSpanExporter(
        endpoint=os.environ["CONFORMANCE_OTLP"],
        headers={"Authorization": f"Bearer {os.environ['CONFORMANCE_KEY']}"},
        timeout=10,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    return provider


def done(provider, **facts) -> None:
    """Flush every span, then say what the client did (the test prints it on failure)."""
    flushed = provider.force_flush(15_000)
    provider.shutdown()
    print(json.dumps({"flushed": flushed, **facts}))
    sys.exit(0 if flushed else 3)


def expect_error(call, status: int) -> str:
    """Run a call that must fail with `status`; its message."""
    try:
        call()
    except Exception as exc:  # the library's own error type
        code = getattr(exc, "status_code", None) or getattr(
            getattr(exc, "response", None), "status_code", None
        )
        if code != status:
            raise AssertionError(f"expected HTTP {status}, got {code}: {exc}") from exc
        return str(exc)
    raise AssertionError(f"the call did not fail with HTTP {status}")
