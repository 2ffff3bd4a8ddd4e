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
TOTAL_TOKENS = ("llm.token_count.total", "gen_ai.usage.total_tokens")
COST = ("gen_ai.usage.cost", "llm.cost.total")
INPUT_MESSAGES = ("gen_ai.input.messages", "gen_ai.prompt", "input.value")
OUTPUT_MESSAGES = ("gen_ai.output.messages", "gen_ai.completion", "output.value")
FINISH = ("gen_ai.response.finish_reasons", "gen_ai.response.finish_reason")
TTFT_SECONDS = ("gen_ai.server.time_to_first_token", "gen_ai.response.time_to_first_chunk")
USER = ("user.id", "enduser.id", "langfuse.user.id")
SESSION = ("session.id", "gen_ai.conversation.id", "langfuse.session.id")
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
    raw = take(attrs, OPERATION)
    kind = attrs.pop(OPENINFERENCE_KIND, None)
    if isinstance(raw, str):
        return GENAI_OPERATIONS.get(raw.lower(), "other")
    if isinstance(kind, str):
        return OPENINFERENCE_OPERATIONS.get(kind.upper(), "other")
    return "other"


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


def indexed_messages(attrs: dict[str, Any], pattern: re.Pattern) -> str | None:
    """`gen_ai.prompt.0.content` / `llm.input_messages.0.message.content` style attributes."""
    found: dict[int, dict[str, Any]] = {}
    for key in [k for k in attrs if pattern.match(k)]:
        index, field = pattern.match(key).groups()
        found.setdefault(int(index), {})[field] = attrs.pop(key)
    if not found:
        return None
    return messages_text([found[i] for i in sorted(found)])
