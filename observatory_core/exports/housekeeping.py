"""The worker's housekeeping every few minutes (`runtime/worker.py`): completed files past
their retention expired and deleted, old audit entries and log-in state purged, partial files no
worker still writes removed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine

from observatory_core.accounts import audit as audit_trail
from observatory_core.accounts import sessions, throttle
from observatory_core.exports.job_claims import utc_now
from observatory_core.exports.jobs import Status
from observatory_core.exports.worker_config import WorkerConfig
from observatory_core.storage.schema import export_jobs


def maintenance(engine: Engine, config: WorkerConfig, now: datetime | None = None) -> dict:
    """Expire old files, drop old audit entries and orphaned partial files."""
    now = now or utc_now()
    with engine.begin() as conn:
        expired = (
            conn.execute(
                update(export_jobs)
                .where(
                    export_jobs.c.status == Status.COMPLETED.value, export_jobs.c.expires_at <= now
                )
                .values(status=Status.EXPIRED.value)
                .returning(export_jobs.c.file_name)
            )
            .scalars()
            .all()
        )
        audits = audit_trail.purge(conn, config.audit_retention, now)
        throttle.purge(conn, now)  # log-in state that no longer counts
        sessions.purge(conn, now)
    for name in expired:
        if name:
            (config.export_dir / name).unlink(missing_ok=True)
    orphans = 0
    if config.export_dir.is_dir():
        cutoff = (now - config.heartbeat_timeout * 4).timestamp()
        for part in config.export_dir.glob(".*.part"):
            if part.stat().st_mtime < cutoff:
                part.unlink(missing_ok=True)
                orphans += 1
    return {"expired": len(expired), "audit_deleted": audits, "orphans_deleted": orphans}
