"""`POST /v1/traces`: read the body (bounded), decode off the event loop, await the commit."""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from observatory_core.accounts import keyguard
from observatory_core.base.settings import get_settings
from observatory_core.ingest.apikeys import BadKey, key_from_headers
from observatory_core.ingest.counts import record_rejections
from observatory_core.ingest.isolate import database_reason
from observatory_core.ingest.otlp import JSON, PROTOBUF, BadPayload
from observatory_core.ingest.receiver import Answer, error_answer, refuse
from observatory_core.ingest.service import get_ingest
from observatory_core.ingest.writer import Overloaded, ShuttingDown
from observatory_core.storage.engine import is_unavailable

log = logging.getLogger("observatory.ingest")
RETRY_OVERLOADED_S = 1
RETRY_UNAVAILABLE_S = 5
STOPPING = "The server is stopping; retry."
UNAVAILABLE = "The database is unavailable; retry."
FAILED = "The server failed on this request (it is logged); report it if it happens again."


def _reply(answer: Answer) -> Response:
    return Response(
        answer.body, answer.status, headers=answer.headers, media_type=answer.content_type
    )


# A body over the limit is still read to its end (and dropped) up to this size, so the client,
# which sends it all before reading the answer, gets the 413 instead of a reset connection.
DRAIN_MAX_BYTES = 256 * 2**20


async def _read(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over `limit` (what passes the limit is read and dropped).

    Raises `ClientDisconnect` when the client goes away before the end of its body."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        waits = "100-continue" in request.headers.get("expect", "").lower()
        if waits or int(declared) > DRAIN_MAX_BYTES:
            return None  # the client waits for our answer, or is too big to wait for
    body = bytearray()
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > DRAIN_MAX_BYTES:
            return None  # the server closes the connection after answering
        if seen <= limit:
            body += chunk
        elif body:
            body = bytearray()  # over the limit: keep reading, keep nothing
    return None if seen > limit else bytes(body)


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
    try:
        body = await _read(request, receiver.max_body_bytes)
    except ClientDisconnect:
        return _reply(error_answer(kind, 400, "The client closed the connection mid-body."))
    if body is None:
        return _reply(error_answer(kind, 413, receiver.too_large_message()))
    # the writer waits a moment for a request being decoded, to write it with the others
    with writer.arriving() as arrival:
        try:
            decoded = await run_in_threadpool(receiver.decode, body, request.headers)
        except (BadKey, BadPayload) as exc:
            arrival.refused()
            if isinstance(exc, BadKey) and key_from_headers(request.headers):
                await run_in_threadpool(keyguard.guard.failed, receiver.engine, address)
            return _reply(refuse(exc, kind))
        except Exception as exc:
            if is_unavailable(exc):
                return _reply(error_answer(kind, 503, UNAVAILABLE, RETRY_UNAVAILABLE_S))
            log.exception("OTLP request failed unexpectedly")
            return _reply(error_answer(kind, 500, FAILED))
        if not decoded.rows:
            arrival.refused()
            await _count_rejections(receiver, decoded, 0)
            return _reply(decoded.answer())
        try:
            done = arrival.submit(decoded.rows)
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
        refused = await asyncio.wrap_future(done)
    except Exception as exc:
        if is_unavailable(exc):
            return _reply(error_answer(kind, 503, UNAVAILABLE, RETRY_UNAVAILABLE_S))
        log.warning("spans refused by the database: %s", exc)
        reason = database_reason(exc)
        return _reply(error_answer(kind, 400, f"The database refused these spans: {reason}"))
    if refused:
        decoded.refused_by_database(refused)
    await _count_rejections(receiver, decoded, len(decoded.rows) - len(refused or ()))
    return _reply(decoded.answer())


async def _count_rejections(receiver, decoded, accepted: int) -> None:
    """Feed the 'ingestion rejecting spans' system rule; never at the cost of the answer."""
    if not decoded.rejected:
        return
    try:
        await run_in_threadpool(
            record_rejections, receiver.engine, decoded.org_id, accepted, decoded.rejected
        )
    except Exception:
        log.exception("could not record rejected spans")
