"""The FastAPI application mounted at /api/v1: error handling and the routers."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount

from observatory_core.api import changes, dashboards, exports, metrics, people, traces
from observatory_core.api.common import refresh_filter_parameters
from observatory_core.api.context import ApiError, RequestContext, meta
from observatory_core.api.limits import ReadGuard
from observatory_core.base.errors import (
    DatabaseUnavailable,
    PermissionDenied,
    QueryTooLarge,
    QueryTooSlow,
    UserError,
)
from observatory_core.exports.jobs import Conflict, NotFound

DESCRIPTION = """Programs do what the pages do: list and search spans, open a trace, query
metrics and summaries, and run exports, with the same filters (`FilterSpec`) as the app.

Authenticate with an API key that has the `read` scope: `Authorization: Bearer obs_...`
(create one on the Admin page). A key acts with the role chosen when it was made, inside its
org (and its project, if it is bound to one). Limits per key and role are announced in the
`X-RateLimit-*` headers."""

PREFIX = "/api/v1"


def _error(
    request: Request, status: int, code: str, message: str, headers: dict | None = None
) -> JSONResponse:
    all_headers = {**getattr(request.state, "rate_headers", {}), **(headers or {})}
    return JSONResponse(
        {"error": {"code": code, "message": message}, "meta": meta(request)},
        status_code=status,
        headers=all_headers,
    )


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path"))
    return f"{where or 'request'}: {first.get('msg', 'is not valid')}"


RETRY = {"Retry-After": "5"}
# A pooled connection the server dropped (a restart): the pool discards its old connections, so
# a retry reconnects. The driver's text (with SQL) stays in the log, not in the answer.
CONNECTION_LOST = "The database connection was lost; retry in a few seconds."

# Errors and their answers (message None: the exception's own, written for users); UserError
# last, as the fallback for its subclasses.
KNOWN_ERRORS = (
    (NotFound, 404, "not_found", None, None),
    (Conflict, 409, "conflict", None, None),
    (PermissionDenied, 403, "forbidden", None, None),
    (DatabaseUnavailable, 503, "unavailable", RETRY, None),
    (QueryTooSlow, 503, "timeout", RETRY, None),
    (QueryTooLarge, 400, "too_large", None, None),
    (OperationalError, 503, "unavailable", RETRY, CONNECTION_LOST),
    (UserError, 400, "bad_request", None, None),
)


def _handler(status: int, code: str, headers: dict | None, message: str | None):
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return _error(request, status, code, message or str(exc), headers)

    return handle


def create_app() -> FastAPI:
    refresh_filter_parameters()  # every field declared by now is a documented parameter
    app = FastAPI(
        title="LLM Observatory API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )

    app.add_middleware(ReadGuard)  # inside RequestContext: its answers carry the request id
    app.add_middleware(RequestContext)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        message = (
            "No such route; see /api/v1/openapi.json."
            if exc.status_code == 404
            else str(exc.detail)
        )
        return _error(request, exc.status_code, code, message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(request, 422, "bad_request", _validation_message(exc))

    for kind, status, code, headers, message in KNOWN_ERRORS:
        app.add_exception_handler(kind, _handler(status, code, headers, message))

    for module in (traces, metrics, changes, exports, people, dashboards):
        app.include_router(module.router)
    return app


def api_mount() -> Mount:
    """The API where the server mounts it. Starlette's mount pattern stops at a newline, so an id
    holding an encoded one (`/sessions/a%0Ab`) fell through to the host's plain-text 404 instead of
    the API's JSON answer."""
    mount = Mount(PREFIX, app=create_app())
    mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
    return mount
