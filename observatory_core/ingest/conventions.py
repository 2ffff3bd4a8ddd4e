"""Which attribute names mean what, one table per convention (OpenTelemetry GenAI, its older
names, OpenInference, Traceloop/OpenLLMetry, the Vercel AI SDK, Langfuse, LiteLLM), plus the
value maps and readers for what is more than a rename (operations, indexed messages, invocation
parameters, the AI SDK's spans). docs/ingestion.md prints the tables and lists, per library,
what it sends and what is read from it."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from observatory_core.ingest.attributes import as_list

# One table per convention: attribute name -> span field. Where several names give one field,
# the first present wins: conventions in the order of CONVENTIONS, then names in table order
# (so the current GenAI name beats its older one). docs/ingestion.md prints these tables
# (`mapping_markdown`), and a test keeps the two the same.
GENAI = {  # OpenTelemetry GenAI semantic conventions, current names
    "gen_ai.operation.name": "operation",
    "gen_ai.provider.name": "provider",
    "gen_ai.request.model": "model",
    "gen_ai.response.model": "model",
    "gen_ai.usage.input_tokens": "input_tokens",
    "gen_ai.usage.output_tokens": "output_tokens",
    "gen_ai.input.messages": "input_text",
    "gen_ai.output.messages": "output_text",
    "gen_ai.response.finish_reasons": "finish_reason",
    "gen_ai.server.time_to_first_token": "ttft_seconds",
    "gen_ai.response.time_to_first_chunk": "ttft_seconds",
    "user.id": "user_id",
    "session.id": "session_id",
    "gen_ai.conversation.id": "session_id",
    "error.type": "error_type",
    "deployment.environment.name": "environment",
}
GENAI_OLDER = {  # names the GenAI conventions used before, still sent by many libraries
    "gen_ai.system": "provider",
    "gen_ai.usage.prompt_tokens": "input_tokens",
    "gen_ai.usage.completion_tokens": "output_tokens",
    "gen_ai.usage.total_tokens": "total_tokens",
    "gen_ai.usage.cost": "cost",
    "gen_ai.prompt": "input_text",
    "gen_ai.completion": "output_text",
    "gen_ai.response.finish_reason": "finish_reason",
    "enduser.id": "user_id",
    "deployment.environment": "environment",
}
OPENINFERENCE = {  # Arize OpenInference
    "llm.provider": "provider",
    "llm.system": "provider",
    "llm.model_name": "model",
    "embedding.model_name": "model",
    "llm.token_count.prompt": "input_tokens",
    "llm.token_count.completion": "output_tokens",
    "llm.token_count.total": "total_tokens",
    "llm.cost.total": "cost",
    "input.value": "input_text",
    "output.value": "output_text",
    "llm.finish_reason": "finish_reason",
    "tag.tags": "tags",
    "metadata": "metadata",
}
TRACELOOP = {  # Traceloop / OpenLLMetry
    "llm.usage.total_tokens": "total_tokens",
    "traceloop.association.properties.user_id": "user_id",
    "traceloop.association.properties.session_id": "session_id",
    "gen_ai.user": "user_id",  # OpenAI's `user` request field
}
# Vercel AI SDK: `experimental_telemetry.metadata` arrives as ai.telemetry.metadata.<key>;
# userId and sessionId are the keys its docs (and Langfuse's) use for the end user and session.
AI_SDK_METADATA = "ai.telemetry.metadata."
VERCEL_AI = {  # Vercel AI SDK (its provider-call spans are read by `ai_sdk` below)
    AI_SDK_METADATA + "userId": "user_id",
    AI_SDK_METADATA + "sessionId": "session_id",
    # its GenAI telemetry (seconds); the legacy `ai.response.msToFirstChunk` is read by `ai_sdk`
    "gen_ai.client.operation.time_to_first_chunk": "ttft_seconds",
}
LANGFUSE = {  # Langfuse's own attribute names
    "langfuse.user.id": "user_id",
    "langfuse.session.id": "session_id",
    "langfuse.trace.tags": "tags",
    "langfuse.metadata": "metadata",
}
LITELLM = {  # LiteLLM's `otel` callback
    "llm.user": "user_id",  # OpenAI's `user` request field (older OpenLLMetry too)
}
OBSERVATORY = {  # this app's own (a resource attribute)
    "observatory.project": "project",
}
CONVENTIONS: tuple[tuple[str, dict[str, str]], ...] = (
    ("OpenTelemetry GenAI", GENAI),
    ("GenAI, older names", GENAI_OLDER),
    ("OpenInference", OPENINFERENCE),
    ("Traceloop / OpenLLMetry", TRACELOOP),
    ("Vercel AI SDK", VERCEL_AI),
    ("Langfuse", LANGFUSE),
    ("LiteLLM", LITELLM),
    ("LLM Observatory", OBSERVATORY),
)


def names_for(field: str) -> tuple[str, ...]:
    """Every attribute name that gives `field`, in precedence order."""
    return tuple(name for _, table in CONVENTIONS for name, f in table.items() if f == field)


OPERATION = names_for("operation")
PROVIDER = names_for("provider")
MODEL = names_for("model")
INPUT_TOKENS = names_for("input_tokens")
OUTPUT_TOKENS = names_for("output_tokens")
TOTAL_TOKENS = names_for("total_tokens")
COST = names_for("cost")
INPUT_MESSAGES = names_for("input_text")
OUTPUT_MESSAGES = names_for("output_text")
FINISH = names_for("finish_reason")
TTFT_SECONDS = names_for("ttft_seconds")
USER = names_for("user_id")
SESSION = names_for("session_id")
TAGS = names_for("tags")
METADATA = names_for("metadata")
ERROR_TYPE = names_for("error_type")
ENVIRONMENT = names_for("environment")
PROJECT = names_for("project")
# attribute name -> its field: one pass over a span's few keys says which fields it can give,
# instead of looking up every name of every convention on every span
FIELD_OF = {name: field for _, table in CONVENTIONS for name, field in table.items()}


# Keys read by their prefix (indexed messages, Langfuse metadata, association properties): a
# span without any skips those reads.
PREFIXED = (
    "gen_ai.prompt.",
    "llm.input_messages.",
    "gen_ai.completion.",
    "llm.output_messages.",
    "langfuse.metadata.",
    "traceloop.association.properties.",
)


def fields_in(attrs: dict[str, Any]) -> set[str]:
    """The fields some attribute of `attrs` may give (`take` finds nothing for the others),
    plus "prefixed" when a key starts with one of `PREFIXED`."""
    fields = set()
    for key in attrs:
        field = FIELD_OF.get(key)
        if field is not None:
            fields.add(field)
        if key.startswith(PREFIXED):  # traceloop's user_id is both
            fields.add("prefixed")
    return fields


# Traceloop/OpenLLMetry: the app's "association properties" (user and session above; the rest
# become metadata).
ASSOCIATION = "traceloop.association.properties."
# Events that mark a stream's first token (or chunk), when no attribute says it: OpenInference's
# one event; OpenLLMetry's event per chunk (the first one counts); the Vercel AI SDK's.
FIRST_TOKEN_EVENTS = (
    "First Token Stream Event",
    "gen_ai.content.completion.chunk",
    "llm.content.completion.chunk",
    "ai.stream.firstChunk",
)
# One event per streamed chunk: kept as one entry with a count, not hundreds.
CHUNK_EVENTS = ("gen_ai.content.completion.chunk", "llm.content.completion.chunk")
# OpenInference: the request's parameters as JSON; a failed call's model is only there.
INVOCATION_PARAMETERS = "llm.invocation_parameters"

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
# Vercel AI SDK: only the provider-call spans (doGenerate, doStream, doEmbed) are LLM calls; the
# wrapping ai.generateText / ai.streamText / ai.embed spans repeat their model and usage, so they
# are read as `other` spans (no model, no tokens) and nothing is counted twice.
AI_SDK_OPERATION = "ai.operationId"
AI_SDK_CALLS = {
    "ai.generateText.doGenerate": "chat",
    "ai.streamText.doStream": "chat",
    "ai.generateObject.doGenerate": "chat",
    "ai.streamObject.doStream": "chat",
    "ai.embed.doEmbed": "embeddings",
    "ai.embedMany.doEmbed": "embeddings",
}
AI_SDK_TOOL = "ai.toolCall"
AI_SDK_WRAPPERS = {
    "ai.generateText",
    "ai.streamText",
    "ai.generateObject",
    "ai.streamObject",
    "ai.embed",
    "ai.embedMany",
}
AI_SDK_PROMPT = "ai.prompt"
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
    # LiteLLM names the operation after its call type
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "acompletion": "chat",
}
# Indexed message attributes of older GenAI instrumentations and of OpenInference.
INDEXED_INPUT = re.compile(r"^(?:gen_ai\.prompt|llm\.input_messages)\.(\d+)\.(?:message\.)?(\w+)$")
INDEXED_OUTPUT = re.compile(
    r"^(?:gen_ai\.completion|llm\.output_messages)\.(\d+)\.(?:message\.)?(\w+)$"
)
# OpenInference's tool calls of a message: ...message.tool_calls.M.tool_call.function.name
INDEXED_TOOL_CALLS = {
    INDEXED_INPUT: (
        re.compile(
            r"^llm\.input_messages\.(\d+)\.message\.tool_calls\.(\d+)\.tool_call\.function\.(name|arguments)$"
        ),
    ),
    INDEXED_OUTPUT: (
        re.compile(
            r"^llm\.output_messages\.(\d+)\.message\.tool_calls\.(\d+)\.tool_call\.function\.(name|arguments)$"
        ),
        # older GenAI names (LiteLLM's otel callback): gen_ai.completion.N.function_call.name
        re.compile(r"^gen_ai\.completion\.(\d+)\.function_call()\.(name|arguments)$"),
    ),
}

# What every key an indexed pattern (or its tool calls) can match starts with.
_INDEXED_PREFIXES = {
    INDEXED_INPUT: ("gen_ai.prompt.", "llm.input_messages."),
    INDEXED_OUTPUT: ("gen_ai.completion.", "llm.output_messages."),
}


def ai_sdk(attrs: dict[str, Any]) -> None:
    """Read a Vercel AI SDK provider-call span as the GenAI names it stands for (names the span
    already has win): operation, model, provider ("openai.chat" is provider openai), embedding
    tokens, messages, output text or tool calls, time to first chunk. A wrapper span gets only
    its prompt and answer as text, a tool span its arguments and result."""
    op = attrs.get(AI_SDK_OPERATION)
    if not isinstance(op, str):  # absent, or a list or map no SDK sends: not its span
        return
    if op == AI_SDK_TOOL:
        attrs.setdefault("gen_ai.operation.name", "execute_tool")
        _as_text(attrs, "ai.toolCall.args", "gen_ai.input.messages")
        _as_text(attrs, "ai.toolCall.result", "gen_ai.output.messages")
        return
    if op in AI_SDK_WRAPPERS:  # text only: its model and usage are its calls'
        _ai_sdk_prompt(attrs)
        _as_text(attrs, "ai.response.text", "gen_ai.output.messages")
        return
    if op not in AI_SDK_CALLS:
        return
    attrs.setdefault("gen_ai.operation.name", AI_SDK_CALLS[op])
    if "ai.model.id" in attrs:
        attrs.setdefault("gen_ai.request.model", attrs["ai.model.id"])
    provider = attrs.get("gen_ai.system") or attrs.get("ai.model.provider")
    if isinstance(provider, str) and "gen_ai.provider.name" not in attrs:
        attrs["gen_ai.provider.name"] = provider.split(".")[0]
        attrs.pop("gen_ai.system", None)
    if "ai.usage.tokens" in attrs:  # embeddings
        attrs.setdefault("gen_ai.usage.input_tokens", attrs.pop("ai.usage.tokens"))
    if "ai.prompt.messages" in attrs:
        attrs.setdefault("gen_ai.input.messages", attrs.pop("ai.prompt.messages"))
    if "ai.response.text" in attrs:
        _as_text(attrs, "ai.response.text", "gen_ai.output.messages")
    elif "ai.response.toolCalls" in attrs:
        calls = as_list(attrs["ai.response.toolCalls"])
        parts = [
            {"type": "tool-call", "toolName": c.get("toolName"), "input": c.get("input")}
            for c in calls
            if isinstance(c, dict)
        ]
        attrs.setdefault("gen_ai.output.messages", json.dumps([{"parts": parts}]))
    for name in ("ai.response.msToFirstChunk", "ai.stream.msToFirstChunk"):
        first_chunk_ms = attrs.get(name)
        if isinstance(first_chunk_ms, int | float) and 0 <= first_chunk_ms < 86_400_000:
            attrs.setdefault("gen_ai.server.time_to_first_token", first_chunk_ms / 1000)
            del attrs[name]


def _as_text(attrs: dict[str, Any], name: str, target: str) -> None:
    """`name`'s value as the one-message text of `target` (shown as sent, even if JSON)."""
    if isinstance(attrs.get(name), str) and target not in attrs:
        attrs[target] = json.dumps([{"content": attrs.pop(name)}])


def _ai_sdk_prompt(attrs: dict[str, Any]) -> None:
    """A wrapper span's `ai.prompt` ({"system", "prompt" or "messages"}) as messages."""
    try:
        prompt = json.loads(attrs.get(AI_SDK_PROMPT) or "")
    except (TypeError, ValueError):
        return
    if not isinstance(prompt, dict) or "gen_ai.input.messages" in attrs:
        return
    messages = [{"role": "system", "content": prompt["system"]}] if prompt.get("system") else []
    if isinstance(prompt.get("messages"), list):
        messages += prompt["messages"]
    if isinstance(prompt.get("prompt"), str):
        messages.append({"role": "user", "content": prompt["prompt"]})
    if messages:
        attrs["gen_ai.input.messages"] = json.dumps(messages)
        del attrs[AI_SDK_PROMPT]


def first_token_seconds(span) -> float | None:
    """Seconds from the span's start to its earliest first-token (or first-chunk) event."""
    times = [
        event.time_unix_nano
        for event in span.events
        if event.name in FIRST_TOKEN_EVENTS and event.time_unix_nano >= span.start_time_unix_nano
    ]
    return (min(times) - span.start_time_unix_nano) / 1e9 if times else None


def ttft_ms(seconds: Any) -> float | None:
    """Time to first token; a value that is no duration (negative, infinite) is left out."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return None
    ms = float(seconds) * 1000
    return ms if math.isfinite(ms) and ms >= 0 else None


def first_token_seconds_of_kept(events: list[dict]) -> float | None:
    """The same from events as stored in `attributes["otel.events"]` (for `remap`)."""
    offsets = [
        e["offset_ms"]
        for e in events
        if isinstance(e, dict)
        and e.get("name") in FIRST_TOKEN_EVENTS
        and isinstance(e.get("offset_ms"), int | float)
        and e["offset_ms"] >= 0
    ]
    return min(offsets) / 1000 if offsets else None


def take(attrs: dict[str, Any], names: tuple[str, ...]) -> Any:
    """The first non-empty value among `names`, removed from `attrs` with every synonym that
    carries the same value (so an attribute sent under two names is not kept twice)."""
    found = None
    for name in names:
        if name not in attrs:  # the usual case: nothing to read or remove
            continue
        value = attrs[name]
        if value is None or value == "" or value == []:
            attrs.pop(name, None)
            continue
        if found is None:
            found = value
            del attrs[name]
        elif value == found:
            del attrs[name]
    return found


def operation(attrs: dict[str, Any], fields: set[str] | None = None) -> str:
    """The GenAI operation name first, then OpenInference's span kind, then Traceloop's request
    type and span kind (a workflow or task span is `other`). `fields`: `fields_in(attrs)`."""
    raw = take(attrs, OPERATION) if fields is None or "operation" in fields else None
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
    if kind in ("text", "reasoning"):  # GenAI parts carry `content`, the Vercel AI SDK's `text`
        text = part.get("content", part.get("text"))
        return text if isinstance(text, str) else None
    if kind == "tool_call":
        return f"[tool call {part.get('name', '?')}: {json.dumps(part.get('arguments'))}]"
    if kind == "tool-call":  # Vercel AI SDK
        return f"[tool call {part.get('toolName', '?')}: {_compact(part.get('input'))}]"
    if kind == "tool_call_response":
        return f"[tool result: {json.dumps(part.get('response'))}]"
    if kind == "tool-result":  # Vercel AI SDK: {"type": "json", "value": ...}
        output = part.get("output")
        value = output.get("value", output) if isinstance(output, dict) else output
        return f"[tool result: {_compact(value)}]"
    return None


def _compact(value: Any) -> str:
    """JSON for a tool's input or output, whether it came as an object or as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, separators=(", ", ": "))


def _message_text(message: Any) -> tuple[str | None, str]:
    if not isinstance(message, dict):
        return None, str(message)
    pieces: list[str] = []
    content = message.get("content")
    if isinstance(content, str):
        pieces.append(content)
    parts = list(message.get("parts") or [])
    if isinstance(content, list):  # Vercel AI SDK: content is a list of parts
        parts += content
    for part in parts:
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
    prefixes = _INDEXED_PREFIXES[pattern]
    if not any(key.startswith(prefixes) for key in attrs):  # the usual span: none at all
        return []
    found: dict[int, dict[str, Any]] = {}
    for key in [k for k in attrs if pattern.match(k)]:
        index, field = pattern.match(key).groups()
        found.setdefault(int(index), {})[field] = attrs.pop(key)
    calls: dict[tuple[int, int], dict[str, Any]] = {}
    for tool_calls in INDEXED_TOOL_CALLS[pattern]:
        for key in [k for k in attrs if tool_calls.match(k)]:
            index, call, field = tool_calls.match(key).groups()
            part = calls.setdefault((int(index), int(call or 0)), {"type": "tool_call"})
            part[field] = attrs.pop(key)
    for (index, _), part in sorted(calls.items()):
        part["arguments"] = _json_or_text(part.get("arguments"))
        found.setdefault(index, {}).setdefault("parts", []).append(part)
    return [found[i] for i in sorted(found)]


def _json_or_text(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value


def message_text(
    attrs: dict[str, Any],
    names: tuple[str, ...],
    pattern: re.Pattern,
    fields: set[str] | None = None,
    field: str = "",
):
    """Readable text: the per-message attributes when the span has them (OpenInference's
    `input.value` is then the raw request JSON, kept in `attributes`), else the first of
    `names`. Also returns the indexed messages, which may carry a finish reason. `fields`
    (`fields_in(attrs)`) skips what the span cannot have: `names` when `field` is not in it."""
    indexed = indexed_messages(attrs, pattern) if fields is None or "prefixed" in fields else []
    if indexed:
        return messages_text(indexed), indexed
    return messages_text(take(attrs, names) if fields is None or field in fields else None), []


_SPECIAL = (
    (
        "operation",
        "`openinference.span.kind` (LLM, EMBEDDING, TOOL, RETRIEVER, AGENT ...), then "
        "Traceloop's `llm.request.type` (chat, completion, embedding, rerank), then "
        "`traceloop.span.kind` (agent, tool; workflow and task are `other`)",
    ),
    ("model", "a failed OpenInference call's `llm.invocation_parameters` JSON (`model`)"),
    (
        "Vercel AI SDK spans",
        "a provider call (`ai.operationId` `ai.generateText.doGenerate`, `ai.streamText.doStream`, "
        "`ai.embed.doEmbed` ...) is read as the GenAI names it stands for: `ai.model.id`, "
        "`ai.model.provider` (`openai.chat` is `openai`), `ai.usage.tokens` for embeddings, "
        "`ai.prompt.messages`, `ai.response.text` or `ai.response.toolCalls`, "
        "`ai.response.msToFirstChunk`; a wrapper span (`ai.generateText` ...) keeps only its "
        "prompt and answer as text, so nothing is counted twice; a tool span (`ai.toolCall`) its "
        "arguments and result",
    ),
    (
        "ttft_seconds",
        "when no attribute above gives it (attributes win, in the order listed): the earliest "
        "first-token event: OpenInference's `First Token Stream Event`, OpenLLMetry's first "
        "`gen_ai.content.completion.chunk` (or `llm.content.completion.chunk`), the Vercel AI "
        "SDK's `ai.stream.firstChunk`; its legacy `ai.response.msToFirstChunk` and "
        "`ai.stream.msToFirstChunk` (milliseconds) are read as attributes",
    ),
    (
        "input_text / output_text",
        "per-message attributes `gen_ai.prompt.N.*` / "
        "`gen_ai.completion.N.*` and `llm.input_messages.N.message.*` / "
        "`llm.output_messages.N.message.*` win over the whole-body names above (OpenInference's "
        "`input.value` is then the raw request JSON and stays in `attributes`); the older "
        "`gen_ai.content.prompt` / `gen_ai.content.completion` events too",
    ),
    ("finish_reason", "an output message's `finish_reason`"),
    (
        "metadata",
        "`langfuse.metadata.KEY` and `traceloop.association.properties.KEY` (other "
        "than user_id and session_id) become metadata keys",
    ),
    (
        "error_type / error_message",
        "the `exception` event's `exception.type` and "
        "`exception.message`; the span status message wins for the message; a failed span "
        "keeps `exception.stacktrace` in `attributes`, shown under the error in the trace detail",
    ),
    ("service_name", "the resource's `service.name`"),
)


def mapping_markdown() -> str:
    """The tables as docs/ingestion.md shows them (a test compares the two)."""
    lines = [
        "| field | attribute names, first present wins | convention |",
        "| --- | --- | --- |",
    ]
    fields = dict.fromkeys(f for _, table in CONVENTIONS for f in table.values())
    for field in fields:
        for convention, table in CONVENTIONS:
            names = [n for n, f in table.items() if f == field]
            if names:
                lines.append(f"| {field} | {', '.join(f'`{n}`' for n in names)} | {convention} |")
    lines += ["", "Beyond renames:", ""]
    lines += [f"- **{field}**: {text}." for field, text in _SPECIAL]
    return "\n".join(lines) + "\n"
