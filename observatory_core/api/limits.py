"""Bounds on what one request may cost: a time budget for every read, and a cap on heavy reads
(traces, metrics, users and sessions) running at once, per key and per process.

A request past its budget is stopped in the database and answered 503 `timeout` with
`Retry-After`; a key with too many heavy reads already running is answered 429; past the
process-wide cap a request waits for a slot, at most its budget. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

from starlette.datastructures import Headers

from observatory_core.base.settings import get_settings
from observatory_core.storage.budget import time_budget

_HEAVY = re.compile(r"/(metrics|traces|changes|users|sessions)(/|$)")


class ReadGuard:
    """Pure ASGI middleware: the budget (a context variable the route's thread inherits) and
    the concurrency caps."""

    def __init__(self, app) -> None:
        self.app = app
        self.running: dict[str, int] = {}
        self._slots: asyncio.Semaphore | None = None

    def _process_slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(get_settings().api_heavy_reads)
        return self._slots

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if not _HEAVY.search(path):
            with time_budget(settings.read_budget_s):
                await self.app(scope, receive, send)
            return
        key = hashlib.sha256(Headers(scope=scope).get("authorization", "").encode()).hexdigest()
        per_key = settings.api_heavy_reads_per_key
        if self.running.get(key, 0) >= per_key:
            await _answer(
                scope,
                send,
                429,
                "rate_limited",
                f"This key already has {per_key} trace or metrics queries running; wait for "
                "them to finish before starting another.",
                {"Retry-After": "1"},
            )
            return
        self.running[key] = self.running.get(key, 0) + 1
        try:
            slots = self._process_slots()
            try:
                await asyncio.wait_for(slots.acquire(), timeout=settings.read_budget_s)
            except TimeoutError:
                await _answer(
                    scope,
                    send,
                    503,
                    "timeout",
                    "The server is busy with other heavy queries; retry in a few seconds.",
                    {"Retry-After": "5"},
                )
                return
            try:
                with time_budget(settings.read_budget_s):
                    await self.app(scope, receive, send)
            finally:
                slots.release()
        finally:
            self.running[key] -= 1
            if not self.running[key]:
                del self.running[key]


async def _answer(
    scope, send, status: int, code: str, message: str, headers: dict[str, str]
) -> None:
    """The API's error envelope, written before any route runs."""
    request_id = scope.get("state", {}).get("request_id", "")
    meta = {"request_id": request_id, "execution_ms": 0.0, "cached": False}
    body = json.dumps({"error": {"code": code, "message": message}, "meta": meta}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
