"""Starlette routes mounted on `st.App`. Each handler is a thin adapter over the core."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from observatory_core.errors import UserError
from observatory_core.settings import get_settings
from observatory_core.storage.engine import check_connection, get_engine


async def healthz(_request: Request) -> JSONResponse:
    """Liveness plus a database round trip, so a load balancer sees a dead database."""
    try:
        check_connection(get_engine(get_settings().database_url))
    except UserError as exc:
        return JSONResponse({"status": "error", "database": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok"})


def routes() -> list[Route]:
    return [Route("/healthz", healthz, methods=["GET"])]
