"""Export jobs: creation with validation and quotas, listing, cancelling, download checks.

States: pending -> processing -> completed | failed | cancelled; completed -> expired.
Only pending/processing jobs can be cancelled; only completed, unexpired jobs downloaded.
Every create, cancel and download is written to the audit log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine

from observatory_core.accounts.audit import record_for
from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import export_refusal, require_filters, visible
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.base.zones import Zone
from observatory_core.exports.writers import FORMATS, compression_problem
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.schema import export_jobs, spans
from observatory_core.traces.fields import resolve_fields

MAX_ROWS = 1_000_000
MAX_ID = 2**31 - 1
MAX_RANGE = timedelta(days=365)
RUNNING_PER_ORG = 3
NEW_PER_USER_PER_HOUR = 20
RETENTION = timedelta(days=7)
EXPORT_DEFAULT_FIELDS = (
    "start_time",
    "end_time",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "operation",
    "provider",
    "model",
    "environment",
    "status",
    "error_type",
    "duration_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "total_cost_usd",
    "user_id",
    "session_id",
    # a call sent twice is listed twice; its twin names the row that counts, so a file's
    # totals over the rows with this empty equal every figure (docs/ingestion.md)
    "duplicate_of",
)


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Conflict(UserError):
    """The job is in a state that does not allow this (HTTP 409)."""


class NotFound(UserError):
    """No such job in the caller's org (HTTP 404, never revealing other orgs)."""


def scoped_jobs(scope: Scope, *columns):
    """SELECT from export_jobs, limited to the scope's org."""
    return select(*(columns or (export_jobs,))).where(export_jobs.c.org_id == scope.org_id)


def audit(
    conn: Connection, scope: Scope, action: str, subject: str, now: datetime, **detail
) -> None:
    record_for(conn, scope, action, subject, at=now, **detail)


def _validate(spec: FilterSpec, fmt: str, compression: str, row_limit: int, now: datetime) -> None:
    if fmt not in FORMATS:
        raise UserError(f"Format {fmt!r} is not offered; choose {', '.join(FORMATS)}.")
    if problem := compression_problem(fmt, compression):
        raise UserError(problem)
    if (
        isinstance(row_limit, bool)
        or not isinstance(row_limit, int)
        or not 1 <= row_limit <= MAX_ROWS
    ):
        raise UserError(
            f"Row limit must be a whole number from 1 to {MAX_ROWS:,}, got {row_limit!r}."
        )
    start, end = spec.window(now)
    if start is not None and (end or now) - start > MAX_RANGE:
        raise UserError(
            "An export covers at most 365 days; narrow the time range or leave it open."
        )


def create_export(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    fmt: str = "csv",
    compression: str = "none",
    fields: tuple[str, ...] | list[str] | None = None,
    row_limit: int = MAX_ROWS,
    now: datetime | None = None,
    zone: Zone | None = None,
) -> dict:
    """Queue an export of the spans `spec` selects, as the data stands now. `zone`: each time
    column is followed by its local time in that zone, with the offset (`exports/local_times`)."""
    scope.require(Permission.EXPORTS_CREATE)
    now = now or datetime.now(UTC)
    chosen = checked_fields(scope, spec, fmt, compression, fields, row_limit, now)
    with engine.begin() as conn:
        recent = conn.execute(
            scoped_jobs(scope, func.count()).where(
                export_jobs.c.created_by == scope.username,
                export_jobs.c.created_at >= now - timedelta(hours=1),
            )
        ).scalar_one()
        if recent >= NEW_PER_USER_PER_HOUR:
            raise UserError(
                f"You started {recent} exports in the last hour; the limit is "
                f"{NEW_PER_USER_PER_HOUR}. Wait a little or reuse a finished export."
            )
        job_id = insert_job(conn, scope, spec, fmt, compression, chosen, row_limit, now, zone)
    return get_export(engine, scope, job_id)


def checked_fields(
    scope: Scope,
    spec: FilterSpec,
    fmt: str,
    compression: str,
    fields: tuple[str, ...] | list[str] | None,
    row_limit: int,
    now: datetime,
) -> tuple[str, ...]:
    """The job's columns, after refusing what cannot run: a bad format, compression, limit or
    range, and fields or filters the role may not see (403). The default set simply leaves
    hidden fields out (`observatory_core.accounts.visibility`). Repeating exports check each
    run again with their owner's role as it is then (`exports/schedules.py`)."""
    _validate(spec, fmt, compression, row_limit, now)
    require_filters(scope, spec)
    if fields:
        return tuple(resolve_fields(scope, fields, "export"))
    return tuple(visible(scope, EXPORT_DEFAULT_FIELDS))


def insert_job(
    conn: Connection,
    scope: Scope,
    spec: FilterSpec,
    fmt: str,
    compression: str,
    fields: tuple[str, ...],
    row_limit: int,
    now: datetime,
    zone: Zone | None,
    **run: object,
) -> int:
    """Store a checked job (fields from `checked_fields`) in the caller's transaction, pinned
    to the data as it stands; `run`: a repeating export's schedule_id and period_start."""
    snapshot = conn.execute(select(func.coalesce(func.max(spans.c.id), 0))).scalar_one()
    job_id = conn.execute(
        export_jobs.insert().values(
            org_id=scope.org_id,
            created_by=scope.username,
            filter_json=spec.pinned(now).to_json(),
            format=fmt,
            compression=compression,
            fields=list(fields),
            row_limit=row_limit,
            status=Status.PENDING.value,
            snapshot_max_id=snapshot,
            snapshot_at=now,
            created_at=now,
            time_zone=zone.name if zone else None,
            **run,
        )
    ).inserted_primary_key[0]
    audit(conn, scope, "export.create", str(job_id), now, format=fmt, compression=compression)
    return job_id


def get_export(engine: Engine, scope: Scope, job_id: int) -> dict:
    scope.require(Permission.EXPORTS_READ)
    if not 1 <= job_id <= MAX_ID:  # beyond the id column's range: cannot exist
        raise NotFound(f"No export {job_id} in your org.")
    with engine.connect() as conn:
        row = conn.execute(scoped_jobs(scope).where(export_jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"No export {job_id} in your org.")
    return dict(row)


def list_exports(engine: Engine, scope: Scope, limit: int = 100) -> list[dict]:
    scope.require(Permission.EXPORTS_READ)
    query = scoped_jobs(scope).order_by(export_jobs.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def cancel_export(engine: Engine, scope: Scope, job_id: int, now: datetime | None = None) -> dict:
    """Cancel a pending or processing job; the worker stops within one page."""
    scope.require(Permission.EXPORTS_CANCEL)
    get_export(engine, scope, job_id)  # 404 for an id that is not the caller's
    now = now or datetime.now(UTC)
    live = (Status.PENDING.value, Status.PROCESSING.value)
    with engine.begin() as conn:
        done = conn.execute(
            update(export_jobs)
            .where(
                export_jobs.c.org_id == scope.org_id,
                export_jobs.c.id == job_id,
                export_jobs.c.status.in_(live),
            )
            .values(status=Status.CANCELLED.value, finished_at=now)
        ).rowcount
        if done:
            audit(conn, scope, "export.cancel", str(job_id), now)
    job = get_export(engine, scope, job_id)
    if not done:
        raise Conflict(
            f"Export {job_id} is {job['status']}; only pending or processing exports can be cancelled."
        )
    return job


def download_target(
    engine: Engine, scope: Scope, job_id: int, export_dir: Path, now: datetime | None = None
) -> tuple[Path, str]:
    """The file to stream and the name to offer, after checking state and expiry."""
    scope.require(Permission.EXPORTS_DOWNLOAD)
    now = now or datetime.now(UTC)
    job = get_export(engine, scope, job_id)
    refused = export_refusal(scope, job)  # whatever its state: the answer must not vary
    if refused:
        raise PermissionDenied(refused)
    if job["status"] == Status.COMPLETED.value and job["expires_at"] and job["expires_at"] <= now:
        job["status"] = Status.EXPIRED.value
    if job["status"] != Status.COMPLETED.value:
        raise Conflict(
            f"Export {job_id} is {job['status']}; only completed exports can be downloaded."
        )
    path = export_dir / job["file_name"]
    if not path.is_file():
        raise Conflict(f"The file of export {job_id} is gone; start the export again.")
    with engine.begin() as conn:
        audit(conn, scope, "export.download", str(job_id), now)
    return path, job["file_name"]
