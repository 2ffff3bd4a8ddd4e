"""Per request: who is calling (an API key with the read scope), the rate limit, and the
`meta` block every answer carries."""

from __future__ import annotations

import itertools
import time
import uuid

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders

from observatory_core.accounts import audit, authversion, keyguard
from observatory_core.accounts.scope import Scope
from observatory_core.api.ratelimit import RateLimiter
from observatory_core.base.settings import get_settings
from observatory_core.ingest.apikeys import BadKey, KeyInfo, key_from_headers, verify_key
from observatory_core.storage.engine import get_engine
from observatory_core.storage.span_reads import span_reads

limiter = RateLimiter()


class ApiError(Exception):
    """An answer other than success, with its stable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def engine():
    return get_engine(get_settings().database_url)


def span_engine():
    """Where spans and their rollups are read (the explorer, the metrics, the summary, the
    changes): the span store's engine when OBSERVATORY_SPAN_STORE is set, else DATABASE_URL's."""
    return span_reads(engine())


# Request ids: unique per process start and counter, without a random draw per request.
_PROCESS = uuid.uuid4().hex[:16]
_SEQUENCE = itertools.count(1)


def _next_request_id() -> str:
    return f"{_PROCESS}{next(_SEQUENCE):016x}"


class RequestContext:
    """Pure ASGI middleware (no per-request task or stream, unlike `@app.middleware`): starts
    the clock and the request id, and puts the rate-limit headers and the id on the answer."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["started"] = time.perf_counter()
        state["request_id"] = (Headers(scope=scope).get("x-request-id") or _next_request_id())[:64]
        state["rate_headers"] = {}

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in state["rate_headers"].items():
                    if name not in headers:
                        headers[name] = value
                headers["X-Request-Id"] = state["request_id"]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def meta(request: Request, cached: bool = False) -> dict:
    started = getattr(request.state, "started", time.perf_counter())
    return {
        "request_id": getattr(request.state, "request_id", ""),
        "execution_ms": round((time.perf_counter() - started) * 1000, 3),
        "cached": cached,
    }


# Verified keys, each with its org's auth version when it was read. Every request reads that
# version again (one primary-key read): revoking a key, disabling a user or changing a role
# bumps it, so the next request in every server process verifies the key anew (no time-to-live).
_verified: dict[str, KeyInfo] = {}


class Throttled(Exception):
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def authenticate(raw: str | None, address: str | None) -> KeyInfo:
    """The key's identity: remembered if its org's auth version has not moved, else read
    from the database, unless the address is blocked for sending bad keys."""
    db = engine()
    known = _verified.get(raw or "")
    if known is not None:
        if authversion.read(db, known.org_id) == known.auth_version:
            return known
        _verified.pop(raw, None)
    block = keyguard.guard.blocked(db, address)
    if block is not None:
        raise Throttled(keyguard.guard.message(block), block.seconds(keyguard.guard.clock()))
    try:
        key = verify_key(db, raw, "read")
    except BadKey:
        if raw:  # a missing key is a set-up slip, not a guess
            keyguard.guard.failed(db, address)
        raise
    if len(_verified) > 10_000:
        _verified.clear()
    _verified[raw] = key
    return key


async def caller(request: Request) -> Scope:
    """FastAPI dependency: the key's scope, after the rate limit for its role."""
    address = request.client.host if request.client else None
    audit.client_address.set(address)
    try:
        raw = key_from_headers(request.headers)
        key = await run_in_threadpool(authenticate, raw, address)
    except BadKey as exc:
        raise ApiError(401, "unauthorized", str(exc)) from None
    except Throttled as exc:
        raise ApiError(
            429, "rate_limited", str(exc), {"Retry-After": str(exc.retry_after_s)}
        ) from None
    verdict = limiter.take(key.id, key.role, get_settings().api_rate_multiplier)
    request.state.rate_headers = verdict.headers()
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"Over {verdict.limit} requests a minute for a {key.role.value} key; retry in {verdict.retry_after_s} s.",
            verdict.headers(),
        )
    return key.scope()
