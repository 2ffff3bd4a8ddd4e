"""`POST /v1/traces`: read the body (bounded), decode off the event loop, await the commit."""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from observatory_core import keyguard
from observatory_core.ingest.apikeys import BadKey, key_from_headers
from observatory_core.ingest.counts import record_rejections
from observatory_core.ingest.otlp import JSON, PROTOBUF, BadPayload
from observatory_core.ingest.receiver import Answer, error_answer, refuse
from observatory_core.ingest.service import get_ingest
from observatory_core.ingest.writer import Overloaded, ShuttingDown
from observatory_core.settings import get_settings
from observatory_core.storage.engine import is_unavailable

log = logging.getLogger("observatory.ingest")
RETRY_OVERLOADED_S = 1
RETRY_UNAVAILABLE_S = 5
STOPPING = "The server is stopping; retry."
UNAVAILABLE = "The database is unavailable; retry."


def _reply(answer: Answer) -> Response:
    return Response(
        answer.body, answer.status, headers=answer.headers, media_type=answer.content_type
    )


async def _read(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes `limit` (nothing more is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def otlp_traces(request: Request) -> Response:
    # Errors answer in the request's encoding; JSON when it named neither (people read those).
    kind = PROTOBUF if "protobuf" in request.headers.get("content-type", "") else JSON
    try:
        receiver, writer = get_ingest(get_settings())
    except ShuttingDown:
        return _reply(error_answer(kind, 503, STOPPING, RETRY_UNAVAILABLE_S))
    address = request.client.host if request.client else None
    if block := keyguard.guard.blocked(receiver.engine, address):  # bad keys from here
        message = keyguard.guard.message(block)
        return _reply(error_answer(kind, 429, message, block.seconds(keyguard.guard.clock())))
    body = await _read(request, receiver.max_body_bytes)
    if body is None:
        return _reply(error_answer(kind, 413, receiver.too_large_message()))
    try:
        decoded = await run_in_threadpool(receiver.decode, body, request.headers)
    except (BadKey, BadPayload) as exc:
        if isinstance(exc, BadKey) and key_from_headers(request.headers):
            await run_in_threadpool(keyguard.guard.failed, receiver.engine, address)
        return _reply(refuse(exc, kind))
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        return _reply(error_answer(kind, 503, UNAVAILABLE, RETRY_UNAVAILABLE_S))
    if decoded.rejected:
        try:
            await run_in_threadpool(
                record_rejections,
                receiver.engine,
                decoded.org_id,
                len(decoded.rows),
                decoded.rejected,
            )
        except Exception:  # the count feeds a system alert; it must not cost the spans
            log.exception("could not record rejected spans")
    if not decoded.rows:
        return _reply(decoded.answer())
    try:
        done = writer.submit(decoded.rows)
    except Overloaded:
        return _reply(
            error_answer(
                kind,
                429,
                "Too many spans are waiting to be written; retry shortly.",
                RETRY_OVERLOADED_S,
            )
        )
    except ShuttingDown:
        return _reply(error_answer(kind, 503, STOPPING, RETRY_UNAVAILABLE_S))
    try:
        await asyncio.wrap_future(done)
    except Exception as exc:
        if is_unavailable(exc):
            return _reply(error_answer(kind, 503, UNAVAILABLE, RETRY_UNAVAILABLE_S))
        log.warning("spans refused by the database: %s", exc)
        reason = str(getattr(exc, "orig", exc)).splitlines()[0][:300]
        return _reply(error_answer(kind, 400, f"The database refused these spans: {reason}"))
    return _reply(decoded.answer())
