"""OTLP/HTTP bodies in and out, with the official `opentelemetry-proto` messages.

What the specification asks of a receiver: protobuf and JSON bodies (JSON carries trace and
span ids as hex, which protobuf's own JSON mapping would read as base64), optional gzip, unknown
fields ignored, and answers in the encoding of the request.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass, field

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_INVALID_ARGUMENT = 3
MAX_REASONS = 3
# What json_format raises on a value it cannot put in the message.
_UNREADABLE = (json_format.ParseError, binascii.Error, TypeError, ValueError, RecursionError)


@dataclass
class BadPayload(Exception):
    """A body the receiver cannot take; `status` is the HTTP status to answer with."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


def media_type(content_type: str | None) -> str:
    """The request's encoding, or 415 naming the two the receiver accepts."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in (PROTOBUF, JSON):
        return kind
    raise BadPayload(
        415,
        f"Content-Type {content_type or '(none)'!r} is not supported; send "
        f"{PROTOBUF} or {JSON} (OTLP/HTTP).",
    )


def inflate(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body with its Content-Encoding undone, refusing to grow past `max_bytes` (zip bombs)."""
    kind = (encoding or "identity").strip().lower()
    if kind == "identity":
        return body
    if kind != "gzip":
        raise BadPayload(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none.")
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise BadPayload(400, "The body says gzip but is not valid gzip data.") from None
    if len(out) > max_bytes:
        raise BadPayload(
            413, f"The body is over {max_bytes // 2**20} MiB uncompressed; send smaller batches."
        )
    if not inflater.eof:
        raise BadPayload(400, "The gzip body is cut short; send the whole batch again.")
    return out


def _hex_to_b64(value):
    if not isinstance(value, str):
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""  # the span is then rejected as having a malformed id, not the whole batch
    return base64.b64encode(raw).decode()


def _ids_to_base64(span: dict) -> None:
    for name in _ID_FIELDS:
        if name in span:
            span[name] = _hex_to_b64(span[name])
    links = span.get("links")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict):
            for name in ("traceId", "spanId"):
                if name in link:
                    link[name] = _hex_to_b64(link[name])


@dataclass
class Parsed:
    """A request as protobuf messages, less the spans that could not be read (and why)."""

    request: ExportTraceServiceRequest
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, count: int, reason: str) -> None:
        self.rejected += count
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)


def _list(parent: dict, key: str, where: str) -> list:
    """`parent[key]` as a list ([] when absent); any other shape refuses the whole body."""
    items = parent.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadPayload(400, f"The JSON body is not OTLP/JSON: {where}.{key} must be a list.")
    return items


def _objects(parent: dict, key: str, where: str) -> list[dict]:
    items = _list(parent, key, where)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadPayload(
                400, f"The JSON body is not OTLP/JSON: {where}.{key}[{i}] must be an object."
            )
    return items


def _why(exc: Exception) -> str:
    """The innermost complaint of json_format ("Failed to parse intValue field: Value out of
    range: ..."), not the chain of every enclosing field."""
    if isinstance(exc, RecursionError):
        return "its values are nested too deeply."
    text = str(exc)
    innermost = text.rfind("Failed to parse ")
    return (text[innermost:] if innermost >= 0 else text)[:200] or type(exc).__name__


def _parse_into(doc: dict, message) -> None:
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except SystemError as exc:
        # protobuf's C parser fails this way on a field name holding an unpaired surrogate
        # ("\\udb35" in the JSON): not text, so the part that holds it is rejected, not the request
        if not isinstance(exc.__cause__ or exc.__context__, UnicodeError):
            raise
        raise ValueError(
            "a field name holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not text."
        ) from exc


def span_label(name: str | None, span_id: str | bytes | None) -> str:
    """How an answer names a span: its name and id, which the sender can look up."""
    hex_id = span_id.hex() if isinstance(span_id, bytes) else span_id
    return f"span {(name or '')[:60] or '(unnamed)'!r} ({hex_id or '-'})"


def _json_span_label(span: dict, index: str) -> str:
    name, span_id = span.get("name"), span.get("spanId")
    raw = base64.b64decode(span_id) if isinstance(span_id, str) else None
    return f"{span_label(name if isinstance(name, str) else None, raw)} at {index}"


def _parse_json(doc: dict) -> Parsed:
    """OTLP/JSON read span by span: a span that does not parse (a number out of range, a
    string where a list belongs ...) is rejected alone, as is everything under a resource or
    scope that does not; only a body whose outline is not OTLP is refused whole."""
    parsed = Parsed(ExportTraceServiceRequest())
    for r, resource_doc in enumerate(_objects(doc, "resourceSpans", "body")):
        where_r = f"resourceSpans[{r}]"
        scopes = _objects(resource_doc, "scopeSpans", where_r)
        resource = parsed.request.resource_spans.add()
        try:
            _parse_into({k: v for k, v in resource_doc.items() if k != "scopeSpans"}, resource)
        except _UNREADABLE as exc:
            del parsed.request.resource_spans[-1]
            count = sum(len(_list(s, "spans", where_r)) for s in scopes)
            parsed.reject(count, f"{where_r} (its resource): {_why(exc)}")
            continue
        for s, scope_doc in enumerate(scopes):
            where_s = f"{where_r}.scopeSpans[{s}]"
            spans = _list(scope_doc, "spans", where_s)
            scope = resource.scope_spans.add()
            try:
                _parse_into({k: v for k, v in scope_doc.items() if k != "spans"}, scope)
            except _UNREADABLE as exc:
                del resource.scope_spans[-1]
                parsed.reject(len(spans), f"{where_s} (its scope): {_why(exc)}")
                continue
            for i, span_doc in enumerate(spans):
                index = f"{where_s}.spans[{i}]"
                if not isinstance(span_doc, dict):
                    parsed.reject(1, f"{index}: a span must be an object.")
                    continue
                _ids_to_base64(span_doc)
                span = Span()
                try:
                    _parse_into(span_doc, span)
                except _UNREADABLE as exc:
                    parsed.reject(1, f"{_json_span_label(span_doc, index)}: {_why(exc)}")
                    continue
                scope.spans.append(span)
    return parsed


def parse_request(body: bytes, kind: str) -> Parsed:
    if kind == PROTOBUF:
        try:
            return Parsed(ExportTraceServiceRequest.FromString(body))
        except DecodeError:
            raise BadPayload(
                400, "The body is not a valid OTLP ExportTraceServiceRequest protobuf message."
            ) from None
    try:
        doc = json.loads(body)
    except RecursionError:
        raise BadPayload(
            400,
            "The JSON body is nested too deeply (over about 1,000 levels) to be OTLP/JSON; "
            "check what the exporter sends.",
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload(400, f"The body is not valid JSON ({exc}).") from None
    if not isinstance(doc, dict):
        raise BadPayload(400, "The JSON body must be an object with 'resourceSpans'.")
    return _parse_json(doc)


def encode_response(kind: str, rejected: int, message: str) -> bytes:
    """ExportTraceServiceResponse; partial_success is set only when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if kind == PROTOBUF:
        return response.SerializeToString()
    return json.dumps(json_format.MessageToDict(response)).encode()


def encode_status(kind: str, message: str) -> bytes:
    """The google.rpc.Status body the specification asks for on an error answer."""
    if kind == PROTOBUF:
        return status_pb2.Status(code=_INVALID_ARGUMENT, message=message).SerializeToString()
    return json.dumps({"code": _INVALID_ARGUMENT, "message": message}).encode()
