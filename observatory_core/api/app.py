"""The FastAPI application mounted at /api/v1: error handling and the routers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from observatory_core.api import exports, metrics, traces
from observatory_core.api.context import ApiError, meta, start
from observatory_core.errors import DatabaseUnavailable, PermissionDenied, UserError
from observatory_core.exports.jobs import Conflict, NotFound

DESCRIPTION = """Programs do what the pages do: list and search spans, open a trace, query
metrics and summaries, and run exports, with the same filters (`FilterSpec`) as the app.

Authenticate with an API key that has the `read` scope: `Authorization: Bearer obs_...`
(create one on the Admin page). A key acts with the role chosen when it was made, inside its
org (and its project, if it is bound to one). Limits per key and role are announced in the
`X-RateLimit-*` headers."""


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


def create_app() -> FastAPI:
    app = FastAPI(
        title="LLM Observatory API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )

    @app.middleware("http")
    async def around(request: Request, call_next):
        start(request)
        response = await call_next(request)
        for name, value in getattr(request.state, "rate_headers", {}).items():
            response.headers.setdefault(name, value)
        response.headers["X-Request-Id"] = request.state.request_id
        return response

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

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return _error(request, 404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict):
        return _error(request, 409, "conflict", str(exc))

    @app.exception_handler(PermissionDenied)
    async def forbidden(request: Request, exc: PermissionDenied):
        return _error(request, 403, "forbidden", str(exc))

    @app.exception_handler(DatabaseUnavailable)
    async def unavailable(request: Request, exc: DatabaseUnavailable):
        return _error(request, 503, "unavailable", str(exc), {"Retry-After": "5"})

    @app.exception_handler(UserError)
    async def bad_request(request: Request, exc: UserError):
        return _error(request, 400, "bad_request", str(exc))

    for module in (traces, metrics, exports):
        app.include_router(module.router)
    return app
