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
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_INVALID_ARGUMENT = 3


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


def _dicts(parent: object, key: str) -> list[dict]:
    """`parent[key]` as a list of objects; anything else is left for the parser to reject."""
    items = parent.get(key) if isinstance(parent, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _ids_to_base64(doc: dict) -> None:
    for resource_spans in _dicts(doc, "resourceSpans"):
        for scope_spans in _dicts(resource_spans, "scopeSpans"):
            for span in _dicts(scope_spans, "spans"):
                for field in _ID_FIELDS:
                    if field in span:
                        span[field] = _hex_to_b64(span[field])
                for link in _dicts(span, "links"):
                    for field in ("traceId", "spanId"):
                        if field in link:
                            link[field] = _hex_to_b64(link[field])


def parse_request(body: bytes, kind: str) -> ExportTraceServiceRequest:
    if kind == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            raise BadPayload(
                400, "The body is not a valid OTLP ExportTraceServiceRequest protobuf message."
            ) from None
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload(400, f"The body is not valid JSON ({exc}).") from None
    if not isinstance(doc, dict):
        raise BadPayload(400, "The JSON body must be an object with 'resourceSpans'.")
    _ids_to_base64(doc)
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, TypeError, ValueError) as exc:
        raise BadPayload(400, f"The JSON body is not OTLP/JSON: {str(exc)[:300]}") from None


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
