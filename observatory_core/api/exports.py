"""Export jobs: create, list, read, cancel (DELETE) and download; repeating exports: create,
list, read, pause or resume (PATCH) and delete."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import export_refusal
from observatory_core.api.common import errors, zone_of
from observatory_core.api.context import caller, engine, meta
from observatory_core.api.export_schemas import (
    ExportBody,
    ExportIn,
    ExportList,
    ScheduleBody,
    ScheduleIn,
    ScheduleList,
    SchedulePatch,
)
from observatory_core.base.settings import get_settings
from observatory_core.exports.jobs import (
    MAX_ID,
    cancel_export,
    create_export,
    download_target,
    get_export,
    list_exports,
)
from observatory_core.exports.schedules import (
    create_schedule,
    delete_schedule,
    get_schedule,
    list_schedules,
    may_manage,
    set_enabled,
)
from observatory_core.filters.spec import FilterSpec

router = APIRouter(tags=["exports"])
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="An export job id")]
ScheduleId = Annotated[int, Path(ge=1, le=MAX_ID, description="A repeating export's id")]


def _job(row: dict, scope: Scope) -> dict:
    return {
        **row,
        "filters": json.loads(row["filter_json"]),
        "download_refused": export_refusal(scope, row),
    }


@router.post(
    "/export/traces", status_code=201, response_model=ExportBody, responses=errors(400, 403)
)
def start_export(
    request: Request, body: ExportIn, scope: Annotated[Scope, Depends(caller)]
) -> dict:
    """Queue an export of the spans the filters select; the worker writes it in the background."""
    job = create_export(
        engine(),
        scope,
        FilterSpec.from_json(body.filters),
        fmt=body.format,
        compression=body.compression,
        fields=body.fields,
        row_limit=body.row_limit,
        zone=zone_of(body.tz) if body.tz is not None else None,
    )
    return {"data": _job(get_export(engine(), scope, job["id"]), scope), "meta": meta(request)}


@router.get("/export/jobs", response_model=ExportList, responses=errors(403))
def jobs(request: Request, scope: Annotated[Scope, Depends(caller)]) -> dict:
    """The org's last 100 export jobs, newest first."""
    return {"data": [_job(j, scope) for j in list_exports(engine(), scope)], "meta": meta(request)}


@router.get("/export/jobs/{job_id}", response_model=ExportBody, responses=errors(403, 404))
def job(request: Request, job_id: JobId, scope: Annotated[Scope, Depends(caller)]) -> dict:
    return {"data": _job(get_export(engine(), scope, job_id), scope), "meta": meta(request)}


@router.delete("/export/jobs/{job_id}", response_model=ExportBody, responses=errors(403, 404, 409))
def cancel(request: Request, job_id: JobId, scope: Annotated[Scope, Depends(caller)]) -> dict:
    """Cancel a pending or processing export (409 for one that already finished)."""
    return {"data": _job(cancel_export(engine(), scope, job_id), scope), "meta": meta(request)}


@router.get(
    "/export/jobs/{job_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file."},
        **errors(403, 404, 409),
    },
)
def download(job_id: JobId, scope: Annotated[Scope, Depends(caller)]) -> FileResponse:
    """The finished file, streamed from disk (409 before it is finished, 404 once expired; 403
    when it holds a field, or was chosen by a filter on one, that the key's role may not see)."""
    path, name = download_target(engine(), scope, job_id, get_settings().export_dir)
    return FileResponse(path, filename=name, media_type="application/octet-stream")


def _schedule(row: dict, scope: Scope) -> dict:
    manages = may_manage(scope, row)
    return {
        **row,
        "filters": json.loads(row["filter_json"]),
        "has_webhook": bool(row["webhook_url"]),
        "webhook_url": row["webhook_url"] if manages else None,  # it may hold a secret
        "may_manage": manages,
    }


@router.post(
    "/export/schedules", status_code=201, response_model=ScheduleBody, responses=errors(400, 403)
)
def start_schedule(
    request: Request, body: ScheduleIn, scope: Annotated[Scope, Depends(caller)]
) -> dict:
    """Repeat an export daily, weekly or monthly over the previous full period of `tz`; each
    run is an ordinary export job, checked with the key's role at the time."""
    row = create_schedule(
        engine(),
        scope,
        FilterSpec.from_json(body.filters),
        cadence=body.cadence,
        zone=zone_of(body.tz),
        name=body.name,
        fmt=body.format,
        compression=body.compression,
        fields=body.fields,
        row_limit=body.row_limit,
        webhook_url=body.webhook_url,
    )
    return {"data": _schedule(row, scope), "meta": meta(request)}


@router.get("/export/schedules", response_model=ScheduleList, responses=errors(403))
def schedules(request: Request, scope: Annotated[Scope, Depends(caller)]) -> dict:
    """The org's repeating exports, newest first."""
    rows = list_schedules(engine(), scope)
    return {"data": [_schedule(r, scope) for r in rows], "meta": meta(request)}


@router.get(
    "/export/schedules/{schedule_id}", response_model=ScheduleBody, responses=errors(403, 404)
)
def schedule(
    request: Request, schedule_id: ScheduleId, scope: Annotated[Scope, Depends(caller)]
) -> dict:
    row = get_schedule(engine(), scope, schedule_id)
    return {"data": _schedule(row, scope), "meta": meta(request)}


@router.patch(
    "/export/schedules/{schedule_id}",
    response_model=ScheduleBody,
    responses=errors(400, 403, 404),
)
def pause_or_resume(
    request: Request,
    schedule_id: ScheduleId,
    body: SchedulePatch,
    scope: Annotated[Scope, Depends(caller)],
) -> dict:
    """Pause (`enabled: false`) or resume; only its owner or an admin (403 otherwise)."""
    row = set_enabled(engine(), scope, schedule_id, body.enabled)
    return {"data": _schedule(row, scope), "meta": meta(request)}


@router.delete(
    "/export/schedules/{schedule_id}", response_model=ScheduleBody, responses=errors(403, 404)
)
def remove_schedule(
    request: Request, schedule_id: ScheduleId, scope: Annotated[Scope, Depends(caller)]
) -> dict:
    """Stop repeating (its jobs stay until they expire); answers the deleted schedule."""
    row = get_schedule(engine(), scope, schedule_id)
    delete_schedule(engine(), scope, schedule_id)
    return {"data": _schedule(row, scope), "meta": meta(request)}
