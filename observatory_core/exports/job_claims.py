"""Which worker runs a job: claiming is one atomic UPDATE, `FOR UPDATE SKIP LOCKED` on
PostgreSQL (any number of workers share the table) and SQLite's single writer elsewhere. A job
whose heartbeat is older than the timeout is taken over by the next claim, or failed with a
message after `MAX_ATTEMPTS`. Every later write of the job is made only while this worker still
owns it, so a cancel or a takeover wins."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.expression import Update

from observatory_core.exports.jobs import RUNNING_PER_ORG, Status
from observatory_core.exports.worker_config import WorkerConfig
from observatory_core.storage.schema import export_jobs
from observatory_core.storage.stores import store_for

MAX_ATTEMPTS = 5  # claims after a silent worker plus restarts after transient database errors


def utc_now() -> datetime:
    return datetime.now(UTC)


def claim_next(engine: Engine, config: WorkerConfig, now: datetime | None = None) -> dict | None:
    """Take the oldest pending job (or one whose worker went silent); None when idle."""
    now = now or utc_now()
    stale = now - config.heartbeat_timeout
    busy_orgs = (
        select(export_jobs.c.org_id)
        .where(export_jobs.c.status == Status.PROCESSING.value, export_jobs.c.heartbeat_at >= stale)
        .group_by(export_jobs.c.org_id)
        .having(func.count() >= RUNNING_PER_ORG)
    )
    candidate = (
        select(export_jobs.c.id)
        .where(
            or_(
                export_jobs.c.status == Status.PENDING.value,
                and_(
                    export_jobs.c.status == Status.PROCESSING.value,
                    export_jobs.c.heartbeat_at < stale,
                ),
            ),
            export_jobs.c.org_id.not_in(busy_orgs),
        )
        .order_by(export_jobs.c.id)
        .limit(1)
    )
    candidate = store_for(engine).claimable(candidate)
    claim = (
        update(export_jobs)
        .where(export_jobs.c.id == candidate.scalar_subquery())
        .values(
            status=Status.PROCESSING.value,
            worker_id=config.worker_id,
            heartbeat_at=now,
            started_at=now,
            attempts=export_jobs.c.attempts + 1,
            progress=0,
            rows_written=0,
        )
        .returning(*export_jobs.c)
    )
    with engine.begin() as conn:
        job = conn.execute(claim).mappings().first()
    if job and job["attempts"] > MAX_ATTEMPTS:
        finish(
            engine,
            job["id"],
            config,
            status=Status.FAILED,
            error=(
                f"The export was interrupted {MAX_ATTEMPTS} times (its worker stopped or lost "
                "the database); "
                "start it again, and tell an admin if it keeps failing."
            ),
        )
        return None
    return dict(job) if job else None


def owned(job_id: int, config: WorkerConfig) -> Update:
    """UPDATE of a job this worker still runs: a cancel or a takeover makes it match nothing."""
    return update(export_jobs).where(
        export_jobs.c.id == job_id,
        export_jobs.c.worker_id == config.worker_id,
        export_jobs.c.status == Status.PROCESSING.value,
    )


def finish(engine: Engine, job_id: int, config: WorkerConfig, *, status: Status, **values) -> bool:
    """Final update, only if this worker still owns the job (a cancel may have won)."""
    error = values.pop("error", None)
    with engine.begin() as conn:
        return bool(
            conn.execute(
                owned(job_id, config).values(
                    status=status.value, finished_at=utc_now(), error_message=error, **values
                )
            ).rowcount
        )


def still_mine(
    engine: Engine, job_id: int, config: WorkerConfig, progress: float, rows: int
) -> bool:
    """Heartbeat and progress in one write; False when the job was cancelled or taken over."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                owned(job_id, config).values(
                    heartbeat_at=utc_now(), progress=progress, rows_written=rows
                )
            ).rowcount
        )
