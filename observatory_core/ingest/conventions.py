"""Which attribute names mean what: GenAI semantic conventions (current and older names) and
OpenInference. The first name present wins, so the current convention beats the older one."""

from __future__ import annotations

import json
import re
from typing import Any

from observatory_core.ingest.attributes import as_list

OPERATION = ("gen_ai.operation.name",)
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
# The requested model names the deployment people filter by; the response model (often a
# dated snapshot) stays in `attributes` when a request model is present.
MODEL = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name", "embedding.model_name")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
TOTAL_TOKENS = ("llm.token_count.total", "gen_ai.usage.total_tokens", "llm.usage.total_tokens")
COST = ("gen_ai.usage.cost", "llm.cost.total")
INPUT_MESSAGES = ("gen_ai.input.messages", "gen_ai.prompt", "input.value")
OUTPUT_MESSAGES = ("gen_ai.output.messages", "gen_ai.completion", "output.value")
FINISH = ("gen_ai.response.finish_reasons", "gen_ai.response.finish_reason", "llm.finish_reason")
TTFT_SECONDS = ("gen_ai.server.time_to_first_token", "gen_ai.response.time_to_first_chunk")
# Traceloop/OpenLLMetry: the app's "association properties" (user, session, anything else).
ASSOCIATION = "traceloop.association.properties."
USER = ("user.id", "enduser.id", "langfuse.user.id", ASSOCIATION + "user_id")
SESSION = (
    "session.id",
    "gen_ai.conversation.id",
    "langfuse.session.id",
    ASSOCIATION + "session_id",
)
# OpenInference: the request's parameters as JSON; a failed call's model is only there.
INVOCATION_PARAMETERS = "llm.invocation_parameters"
TAGS = ("tag.tags", "langfuse.trace.tags")
METADATA = ("metadata", "langfuse.metadata")
ERROR_TYPE = ("error.type",)
ENVIRONMENT = ("deployment.environment.name", "deployment.environment")
PROJECT = ("observatory.project",)

OPENINFERENCE_KIND = "openinference.span.kind"
OPENINFERENCE_OPERATIONS = {
    "LLM": "chat",
    "EMBEDDING": "embeddings",
    "TOOL": "execute_tool",
    "RETRIEVER": "retrieval",
    "RERANKER": "retrieval",
    "AGENT": "invoke_agent",
}
# Traceloop/OpenLLMetry: the kind of LLM request, and the kind of a framework's own spans.
TRACELOOP_REQUEST_TYPE = "llm.request.type"
TRACELOOP_REQUEST_TYPES = {
    "chat": "chat",
    "completion": "completion",
    "embedding": "embeddings",
    "rerank": "retrieval",
}
TRACELOOP_KIND = "traceloop.span.kind"
TRACELOOP_KINDS = {"agent": "invoke_agent", "tool": "execute_tool"}
GENAI_OPERATIONS = {
    "chat": "chat",
    "generate_content": "chat",
    "text_completion": "completion",
    "completion": "completion",
    "embeddings": "embeddings",
    "execute_tool": "execute_tool",
    "invoke_agent": "invoke_agent",
    "create_agent": "invoke_agent",
    "retrieval": "retrieval",
}
# Indexed message attributes of older GenAI instrumentations and of OpenInference.
INDEXED_INPUT = re.compile(r"^(?:gen_ai\.prompt|llm\.input_messages)\.(\d+)\.(?:message\.)?(\w+)$")
INDEXED_OUTPUT = re.compile(
    r"^(?:gen_ai\.completion|llm\.output_messages)\.(\d+)\.(?:message\.)?(\w+)$"
)


def take(attrs: dict[str, Any], names: tuple[str, ...]) -> Any:
    """The first non-empty value among `names`, removed from `attrs` with every synonym that
    carries the same value (so an attribute sent under two names is not kept twice)."""
    found = None
    for name in names:
        value = attrs.get(name)
        if value is None or value == "" or value == []:
            attrs.pop(name, None)
            continue
        if found is None:
            found = value
            del attrs[name]
        elif value == found:
            del attrs[name]
    return found


def operation(attrs: dict[str, Any]) -> str:
    """The GenAI operation name first, then OpenInference's span kind, then Traceloop's request
    type and span kind (a workflow or task span is `other`)."""
    raw = take(attrs, OPERATION)
    kind = attrs.pop(OPENINFERENCE_KIND, None)
    request_type = attrs.pop(TRACELOOP_REQUEST_TYPE, None)
    traceloop_kind = attrs.pop(TRACELOOP_KIND, None)
    if isinstance(raw, str):
        return GENAI_OPERATIONS.get(raw.lower(), "other")
    if isinstance(kind, str):
        return OPENINFERENCE_OPERATIONS.get(kind.upper(), "other")
    if isinstance(request_type, str):
        return TRACELOOP_REQUEST_TYPES.get(request_type.lower(), "other")
    if isinstance(traceloop_kind, str):
        return TRACELOOP_KINDS.get(traceloop_kind.lower(), "other")
    return "other"


def invocation_model(attrs: dict[str, Any]) -> str | None:
    """The model named in OpenInference's invocation parameters (kept in `attrs`)."""
    raw = attrs.get(INVOCATION_PARAMETERS)
    try:
        params = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return None
    model = params.get("model") if isinstance(params, dict) else None
    return str(model) if model else None


def association_metadata(attrs: dict[str, Any]) -> dict[str, Any]:
    """Traceloop's association properties other than user and session, as metadata."""
    return {
        key.removeprefix(ASSOCIATION): attrs.pop(key)
        for key in [k for k in attrs if k.startswith(ASSOCIATION)]
    }


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return None
    kind = part.get("type", "text")
    if kind in ("text", "reasoning") and isinstance(part.get("content"), str):
        return part["content"]
    if kind == "tool_call":
        return f"[tool call {part.get('name', '?')}: {json.dumps(part.get('arguments'))}]"
    if kind == "tool_call_response":
        return f"[tool result: {json.dumps(part.get('response'))}]"
    return None


def _message_text(message: Any) -> tuple[str | None, str]:
    if not isinstance(message, dict):
        return None, str(message)
    pieces: list[str] = []
    if isinstance(message.get("content"), str):
        pieces.append(message["content"])
    for part in message.get("parts") or []:
        text = _part_text(part)
        if text is not None:
            pieces.append(text)
    return message.get("role"), "\n".join(pieces)


def messages_text(value: Any) -> str | None:
    """Readable text for messages: one message is its text; several are 'role: text' lines.
    Plain strings that are not JSON message lists are kept as they are."""
    if value is None:
        return None
    if isinstance(value, str):
        stripped = value.lstrip()
        if not stripped.startswith(("[", "{")):
            return value
        messages = as_list(value)
        if messages == [value]:
            return value
    else:
        messages = value if isinstance(value, list) else [value]
    if isinstance(messages, list) and len(messages) == 1 and isinstance(messages[0], dict):
        return _message_text(messages[0])[1]
    lines = []
    for message in messages:
        role, text = _message_text(message)
        lines.append(f"{role}: {text}" if role else text)
    return "\n".join(lines)


def indexed_messages(attrs: dict[str, Any], pattern: re.Pattern) -> list[dict[str, Any]]:
    """`gen_ai.prompt.0.content` / `llm.input_messages.0.message.content` style attributes, as
    messages in order (empty when there are none)."""
    found: dict[int, dict[str, Any]] = {}
    for key in [k for k in attrs if pattern.match(k)]:
        index, field = pattern.match(key).groups()
        found.setdefault(int(index), {})[field] = attrs.pop(key)
    return [found[i] for i in sorted(found)]


def message_text(attrs: dict[str, Any], names: tuple[str, ...], pattern: re.Pattern):
    """Readable text: the per-message attributes when the span has them (OpenInference's
    `input.value` is then the raw request JSON, kept in `attributes`), else the first of
    `names`. Also returns the indexed messages, which may carry a finish reason."""
    indexed = indexed_messages(attrs, pattern)
    if indexed:
        return messages_text(indexed), indexed
    return messages_text(take(attrs, names)), []
