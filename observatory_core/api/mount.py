"""Starlette routes mounted on `st.App`. Each handler is a thin adapter over the core."""

from __future__ import annotations

from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from observatory_core.accounts import audit
from observatory_core.accounts.login_cookie import username_from_cookie
from observatory_core.accounts.users import scope_for
from observatory_core.api import ops_route as metrics_route
from observatory_core.api.app import api_mount
from observatory_core.api.otlp_route import otlp_traces
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.base.settings import get_settings
from observatory_core.exports.jobs import Conflict, NotFound, download_target
from observatory_core.exports.links import BadLink, verify_download
from observatory_core.storage.engine import check_connection, get_engine


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def healthz(_request: Request) -> JSONResponse:
    """Liveness plus a database round trip, so a load balancer sees a dead database."""
    try:
        await run_in_threadpool(check_connection, get_engine(get_settings().database_url))
    except UserError as exc:
        return JSONResponse({"status": "error", "database": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok"})


def _download(token: str, cookie: str | None, address: str | None = None):
    settings = get_settings()
    secret = settings.require_cookie_key()
    job_id, org_id = verify_download(secret, token)
    engine = get_engine(settings.database_url)
    idle = timedelta(minutes=settings.session_idle_minutes)
    username = username_from_cookie(cookie, secret, engine, idle)  # a live session only
    if username is None:
        raise PermissionError
    audit.client_address.set(address)
    scope = scope_for(engine, username)
    if scope.org_id != org_id:  # another org's link: say nothing about it
        raise NotFound(f"No export {job_id} in your org.")
    return download_target(engine, scope, job_id, settings.export_dir)


async def download_export(request: Request):
    """Stream a finished export from disk; the file is never loaded into memory."""
    settings = get_settings()
    try:
        path, name = await run_in_threadpool(
            _download,
            request.path_params["token"],
            request.cookies.get(settings.cookie_name),
            request.client.host if request.client else None,
        )
    except BadLink as exc:
        return _error(403, "bad_link", str(exc))
    except PermissionError:
        return _error(
            401,
            "login_required",
            "Log in to LLM Observatory first (your session may have ended), then open the link again.",
        )
    except NotFound as exc:
        return _error(404, "not_found", str(exc))
    except Conflict as exc:
        return _error(409, "wrong_state", str(exc))
    except PermissionDenied as exc:
        return _error(403, "forbidden", str(exc))
    except UserError as exc:
        return _error(400, "bad_request", str(exc))
    return FileResponse(path, filename=name, media_type="application/octet-stream")


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/exports/download/{token}", download_export, methods=["GET"]),
        Route("/v1/traces", metrics_route.timed(otlp_traces), methods=["POST"]),
        Route(metrics_route.PATH, metrics_route.metrics, methods=["GET"]),
        api_mount(),
    ]
