"""Dashboards over HTTP: list, create, read, replace and delete, so a team keeps its dashboards
in version control. GET answers the definition in the form POST and PUT take (an export
imports back as it is); definitions are checked by `dashboards.model` (a bad one is a 400
naming the field), writes need `dashboards:manage` (developer and admin keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from observatory_core.accounts.scope import Scope
from observatory_core.api.common import errors
from observatory_core.api.context import caller, engine, meta
from observatory_core.api.dashboard_schemas import DashboardBody, DashboardIn, DashboardList
from observatory_core.dashboards.model import from_dict, to_dict
from observatory_core.dashboards.store import (
    MAX_ID,
    create_dashboard,
    delete_dashboard,
    get_dashboard,
    list_dashboards,
    update_dashboard,
)

router = APIRouter(tags=["dashboards"])
DashboardId = Annotated[int, Path(ge=1, le=MAX_ID, description="A dashboard id")]
Caller = Annotated[Scope, Depends(caller)]


def _body(request: Request, row: dict) -> dict:
    return {"data": {**row, "dashboard": to_dict(row["dashboard"])}, "meta": meta(request)}


@router.get("/dashboards", response_model=DashboardList, responses=errors(403))
def dashboards(request: Request, scope: Caller) -> dict:
    """The org's dashboards by name, without their charts (GET one for its definition)."""
    return {"data": list_dashboards(engine(), scope), "meta": meta(request)}


@router.post(
    "/dashboards", status_code=201, response_model=DashboardBody, responses=errors(400, 403, 409)
)
def create(request: Request, body: DashboardIn, scope: Caller) -> dict:
    """Save a new dashboard (409 when the org has one of that name)."""
    board = from_dict(body.model_dump())
    return _body(request, create_dashboard(engine(), scope, board))


@router.get("/dashboards/{dashboard_id}", response_model=DashboardBody, responses=errors(403, 404))
def one(request: Request, dashboard_id: DashboardId, scope: Caller) -> dict:
    """One dashboard and its definition (`data.dashboard`: the export, as POST takes it)."""
    return _body(request, get_dashboard(engine(), scope, dashboard_id))


@router.put(
    "/dashboards/{dashboard_id}",
    response_model=DashboardBody,
    responses=errors(400, 403, 404, 409),
)
def replace(request: Request, dashboard_id: DashboardId, body: DashboardIn, scope: Caller) -> dict:
    """Replace a dashboard's definition (and name) with the one sent."""
    board = from_dict(body.model_dump())
    return _body(request, update_dashboard(engine(), scope, dashboard_id, board))


@router.delete(
    "/dashboards/{dashboard_id}", response_model=DashboardBody, responses=errors(403, 404)
)
def remove(request: Request, dashboard_id: DashboardId, scope: Caller) -> dict:
    """Delete a dashboard; the answer holds it as it was (post it back to restore it)."""
    return _body(request, delete_dashboard(engine(), scope, dashboard_id))
