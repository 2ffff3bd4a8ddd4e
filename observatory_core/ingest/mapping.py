"""One OTLP span to one span row: ids, times, GenAI fields, text, errors, cost.

A span that cannot be stored faithfully (bad ids, impossible times, absurd numbers) is
rejected with a reason instead, and the rest of its batch goes on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from observatory_core.ingest import conventions as cv
from observatory_core.ingest.attributes import (
    as_dict,
    as_list,
    as_object,
    bounded,
    bounded_value,
)
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import without_nul

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(days=1)
MAX_DURATION = timedelta(days=7)
MAX_TOKENS = 2_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_CONTENT_EVENTS = {
    "gen_ai.content.prompt": "gen_ai.prompt",
    "gen_ai.content.completion": "gen_ai.completion",
}


# The text columns of a mapped row that hold what the sender wrote; the others (ids as hex,
# operation, status, cost source) are made here and fit their columns (`complete_row`).
FREE_TEXT = (
    "name",
    "provider",
    "model",
    "environment",
    "service_name",
    "user_id",
    "session_id",
    "error_type",
    "error_message",
    "finish_reason",
    "input_text",
    "output_text",
    "scope_name",
)


class Rejected(Exception):
    """Why one span was not stored; the message names the span and the fix."""


@dataclass(frozen=True)
class Resource:
    """What a ResourceSpans says about all its spans."""

    service_name: str | None
    environment: str
    project: str | None
    attributes: dict[str, Any]
    # `attributes` as `bounded` keeps them in each span's, made once for all of its spans
    kept: tuple[Any, bool] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kept", bounded_value(self.attributes))

    @classmethod
    def of(cls, resource) -> Resource:
        # Without NUL already here: the project name is looked up in the database.
        attrs = without_nul(as_dict(resource.attributes))
        service = attrs.pop("service.name", None)
        env = cv.take(attrs, cv.ENVIRONMENT)
        project = cv.take(attrs, cv.PROJECT)
        return cls(
            service_name=str(service) if service is not None else None,
            environment=str(env) if env else "default",
            project=str(project) if project else None,
            attributes=attrs,
        )


def _time(nanos: int, what: str, latest: datetime) -> datetime:
    if nanos <= 0:
        raise Rejected(f"{what} is missing; set start_time_unix_nano and end_time_unix_nano.")
    at = _EPOCH + timedelta(0, 0, nanos // 1000)  # microseconds, given by position: cheaper
    if at < EARLIEST or at > latest:
        raise Rejected(
            f"{what} {at.isoformat()} is not plausible; send Unix epoch nanoseconds "
            "(check the exporter's clock)."
        )
    return at


_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)


def _ids(span) -> tuple[str, str, str | None]:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        raise Rejected("trace_id must be 16 bytes (32 hex characters) and not all zero.")
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        raise Rejected("span_id must be 8 bytes (16 hex characters) and not all zero.")
    if parent and len(parent) != 8:
        raise Rejected("parent_span_id must be empty or 8 bytes (16 hex characters).")
    return trace_id.hex(), span_id.hex(), parent.hex() if parent and parent != _ZERO_SPAN else None


# The fields read by name alone (the operation and the text have readers of their own), each
# taken only when `cv.fields_in` found one of its names: most spans carry a few of them.
_TAKEN = {
    "provider": cv.PROVIDER,
    "model": cv.MODEL,
    "input_tokens": cv.INPUT_TOKENS,
    "output_tokens": cv.OUTPUT_TOKENS,
    "total_tokens": cv.TOTAL_TOKENS,
    "cost": cv.COST,
    "finish_reason": cv.FINISH,
    "ttft_seconds": cv.TTFT_SECONDS,
    "error_type": cv.ERROR_TYPE,
    "metadata": cv.METADATA,
    "tags": cv.TAGS,
    "user_id": cv.USER,
    "session_id": cv.SESSION,
}


def _tokens(value: Any, what: str) -> int:
    if value is None:
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise Rejected(f"{what} must be a whole number, got {str(value)[:40]!r}.") from None
    if not 0 <= number <= MAX_TOKENS:
        raise Rejected(f"{what} must be between 0 and {MAX_TOKENS:,}, got {number}.")
    return number


def _reported_cost(value: Any) -> float | None:
    if value is None:
        return None
    try:
        cost = float(value)
    except (TypeError, ValueError, OverflowError):
        raise Rejected(
            f"The reported cost must be a number of USD, got {str(value)[:40]!r}."
        ) from None
    if not math.isfinite(cost) or not 0 <= cost < 1e9:
        raise Rejected(f"The reported cost must be 0 or more USD, got {value}.")
    return cost


def _errors(span) -> tuple[str | None, str | None, str | None, list[dict]]:
    """Error type, message (of the exception event: the status's wins, `map_span`) and the
    exception's stack trace (kept for the trace detail); the other events."""
    error_type = error_message = stacktrace = None
    events: list[dict] = []
    chunks: dict[str, dict] = {}
    for event in span.events:
        attrs = as_dict(event.attributes)
        if event.name == "exception":
            error_type = error_type or attrs.get("exception.type")
            error_message = error_message or attrs.get("exception.message")
            stacktrace = stacktrace or attrs.get("exception.stacktrace")
            continue
        # the time since the span's start, kept so `remap` can read first-token events later
        offset_ms = (event.time_unix_nano - span.start_time_unix_nano) / 1e6
        if event.name in cv.CHUNK_EVENTS:  # one per streamed chunk: keep the first and a count
            if event.name in chunks:
                kept = chunks[event.name]
                kept["count"] += 1
                kept["offset_ms"] = min(kept["offset_ms"], offset_ms)
                continue
            chunks[event.name] = {"name": event.name, "attributes": attrs, "count": 1}
            chunks[event.name]["offset_ms"] = offset_ms
            events.append(chunks[event.name])
            continue
        events.append({"name": event.name, "attributes": attrs, "offset_ms": offset_ms})
    return error_type, error_message, stacktrace, events


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def map_span(
    span,
    resource: Resource,
    scope_name: str,
    *,
    org_id: int,
    project_id: int,
    prices: PriceBook,
    now: datetime,
) -> dict[str, Any]:
    """The span row (before `complete_row`), or `Rejected` saying what is wrong."""
    trace_id, span_id, parent = _ids(span)
    latest = now + MAX_FUTURE
    start = _time(span.start_time_unix_nano, "start time", latest)
    end = _time(span.end_time_unix_nano, "end time", latest)
    if end < start:
        raise Rejected("The span ends before it starts; check end_time_unix_nano.")
    if end - start > MAX_DURATION:
        raise Rejected("The span lasts more than 7 days; check its timestamps.")
    attrs = as_dict(span.attributes)
    span_status = span.status
    status = _STATUS.get(span_status.code, "unset")
    # most spans have no events: nothing to read
    error_type, error_message, stacktrace, events = (
        _errors(span) if span.events else (None, None, None, [])
    )
    if status == "error" and span_status.message:
        error_message = span_status.message
    if stacktrace and status == "error":
        attrs["exception.stacktrace"] = str(stacktrace)
    for event in events:  # older GenAI instrumentations put the text in events
        key = _CONTENT_EVENTS.get(event["name"])
        if key and key in event["attributes"] and key not in attrs:
            attrs[key] = event["attributes"][key]
            events.remove(event)
    cv.ai_sdk(attrs)  # the Vercel AI SDK's provider-call spans, as GenAI names
    # no attribute is added below until the mapped ones are taken, so this stays true
    fields = cv.fields_in(attrs)
    operation = cv.operation(attrs, fields)
    # each field's names are its own, so the order of these takes changes nothing
    taken = {field: cv.take(attrs, _TAKEN[field]) for field in fields if field in _TAKEN}
    value = taken.get
    provider, model = _str(value("provider")), _str(value("model"))
    model = model or cv.invocation_model(attrs)  # a failed OpenInference call names it only there
    input_tokens = _tokens(value("input_tokens"), "input tokens")
    output_tokens = _tokens(value("output_tokens"), "output tokens")
    total = _tokens(value("total_tokens"), "total tokens")
    if total and not input_tokens and not output_tokens:
        input_tokens = total
    if input_tokens + output_tokens > MAX_TOKENS:
        raise Rejected(
            f"input plus output tokens must be at most {MAX_TOKENS:,}, got "
            f"{input_tokens + output_tokens}."
        )
    cost = prices.cost(
        org_id, provider, model, input_tokens, output_tokens, start, _reported_cost(value("cost"))
    )
    input_text, _ = cv.message_text(
        attrs, cv.INPUT_MESSAGES, cv.INDEXED_INPUT, fields, "input_text"
    )
    output_text, outputs = cv.message_text(
        attrs, cv.OUTPUT_MESSAGES, cv.INDEXED_OUTPUT, fields, "output_text"
    )
    finish = as_list(value("finish_reason")) or [
        m["finish_reason"] for m in outputs if m.get("finish_reason")
    ]
    ttft = value("ttft_seconds") or (cv.first_token_seconds(span) if span.events else None)
    error_type = _str(value("error_type")) or error_type
    metadata = as_object(value("metadata")) or {}
    prefixed = "prefixed" in fields
    for key in [k for k in attrs if k.startswith("langfuse.metadata.")] if prefixed else ():
        metadata[key.removeprefix("langfuse.metadata.")] = attrs.pop(key)
    tags = [str(t) for t in as_list(taken["tags"]) if t is not None] if "tags" in taken else []
    user_id, session_id = _str(value("user_id")), _str(value("session_id"))
    if prefixed:
        metadata.update(cv.association_metadata(attrs))
    for noise in ("input.mime_type", "output.mime_type"):
        attrs.pop(noise, None)
    attrs["otel.scope.name"] = scope_name
    attrs["otel.span.kind"] = _KINDS.get(span.kind, "unspecified")
    if events:
        attrs["otel.events"] = events
    if resource.attributes:
        attrs["resource"] = resource.attributes
    return {
        "org_id": org_id,
        "project_id": project_id,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "start_time": start,
        "end_time": end,
        "duration_ms": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
        "ttft_ms": cv.ttft_ms(ttft) if ttft is not None else None,
        "name": span.name or "(unnamed)",
        "operation": operation,
        "provider": provider,
        "model": model,
        "environment": resource.environment,
        "service_name": resource.service_name,
        "scope_name": scope_name or None,  # tells two instrumentations apart (ingest/dedup.py)
        "user_id": user_id,
        "session_id": session_id,
        "status": status,
        "error_type": error_type if status == "error" else None,
        "error_message": error_message if status == "error" else None,
        "finish_reason": _str(finish[0]) if finish else None,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_cost_usd": cost.input_usd,
        "output_cost_usd": cost.output_usd,
        "cost_source": cost.source,
        "input_text": input_text,
        "output_text": output_text,
        "tags": tags[:64],
        "metadata": bounded(metadata) if metadata else {},
        "attributes": bounded(attrs, (resource.attributes, resource.kept)),
    }
