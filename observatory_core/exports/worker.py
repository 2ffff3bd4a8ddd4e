"""The export worker: claim a job, stream its rows into a file, keep a heartbeat.

Claiming is one atomic UPDATE: `FOR UPDATE SKIP LOCKED` on PostgreSQL (any number of
workers share the table), and SQLite's single writer elsewhere. A job whose heartbeat is older
than the timeout is taken over by the next claim, or failed with a message after
`MAX_ATTEMPTS`. A transient database error (a dropped connection, a serialization failure or
deadlock, a restarting server) starts the job over on this worker after a backoff, counted as
another attempt; only permanent errors fail it at once. The file is written under a temporary
name and renamed into place only when complete, so a partial file can never be downloaded.

The rows are read where the explorer reads them (`storage/span_reads.py`): the ClickHouse span
store when `OBSERVATORY_SPAN_STORE` is set, through the same builders (each span one stored
row there, docs/span-store-internals.md "Each span once") in windows of start time, CSV, JSON lines
and JSON text written by the engine where it can (`exports/span_store_csv.py`, `span_store_json.py`)
and Parquet pages made by column (`span_store_parquet.py`), pinned to the spans written before the
job was made (`Store.pin_of_snapshot`); the job itself (state, heartbeat, progress, file) stays in
`DATABASE_URL`. A span store that is down or busy is a transient error like a lost database.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine

from observatory_core.accounts import audit as audit_trail
from observatory_core.accounts import sessions, throttle
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base import prometheus
from observatory_core.base.errors import QueryTooLarge
from observatory_core.base.zones import Zone
from observatory_core.exports.jobs import RETENTION, RUNNING_PER_ORG, Status
from observatory_core.exports.local_times import output_fields, with_local
from observatory_core.exports.schedules import announce_ready, run_due
from observatory_core.exports.span_store_csv import csv_line_plan
from observatory_core.exports.span_store_json import json_text_plan
from observatory_core.exports.span_store_pages import (
    TextPlan,
    Windows,
    job_windows,
    window_pages,
)
from observatory_core.exports.span_store_parquet import parquet_plan
from observatory_core.exports.writers import file_suffix, open_writer
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.fields import FIELDS
from observatory_core.storage.copy_out import copy_ahead, copy_csv_rows
from observatory_core.storage.schema import export_jobs
from observatory_core.storage.span_reads import span_reads
from observatory_core.storage.stores import store_for
from observatory_core.storage.transient import describe, is_transient
from observatory_core.traces.query import count_spans, iter_span_ids, iter_span_pages

log = logging.getLogger("observatory.exports")
MAX_ATTEMPTS = 5  # claims after a silent worker plus restarts after transient database errors
RETRY_BACKOFF_S = 2.0  # 2, 4, 8, 16 s before attempts 2-5 (at most half the heartbeat timeout)
RECONNECT_TRIES = 3  # waits for the database before leaving the job to be taken over
AUDIT_KEEP = timedelta(days=365)  # OBSERVATORY_AUDIT_RETENTION_DAYS


@dataclass(frozen=True)
class WorkerConfig:
    export_dir: Path
    heartbeat_timeout: timedelta = timedelta(seconds=30)
    page_size: int = 5000
    copy_page_size: int = 20_000  # ids per COPY page (PostgreSQL CSV)
    copy_ahead: int = 2  # COPY pages the database prepares while the previous one is written
    span_store_read_rows: int = 20_000  # spans per read on the span store (span_store_pages)
    span_store_line_rows: int = 100_000  # CSV lines per read there (span_store_csv)
    retention: timedelta = RETENTION
    audit_retention: timedelta = AUDIT_KEEP
    worker_id: str = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _now() -> datetime:
    return datetime.now(UTC)


def claim_next(engine: Engine, config: WorkerConfig, now: datetime | None = None) -> dict | None:
    """Take the oldest pending job (or one whose worker went silent); None when idle."""
    now = now or _now()
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
        _finish(
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


def _owned(job_id: int, config: WorkerConfig):
    """UPDATE of a job this worker still runs: a cancel or a takeover makes it match nothing."""
    return update(export_jobs).where(
        export_jobs.c.id == job_id,
        export_jobs.c.worker_id == config.worker_id,
        export_jobs.c.status == Status.PROCESSING.value,
    )


def _finish(engine: Engine, job_id: int, config: WorkerConfig, *, status: Status, **values) -> bool:
    """Final update, only if this worker still owns the job (a cancel may have won)."""
    error = values.pop("error", None)
    with engine.begin() as conn:
        return bool(
            conn.execute(
                _owned(job_id, config).values(
                    status=status.value, finished_at=_now(), error_message=error, **values
                )
            ).rowcount
        )


def _still_mine(
    engine: Engine, job_id: int, config: WorkerConfig, progress: float, rows: int
) -> bool:
    """Heartbeat and progress in one write; False when the job was cancelled or taken over."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                _owned(job_id, config).values(
                    heartbeat_at=_now(), progress=progress, rows_written=rows
                )
            ).rowcount
        )


def _user_message(exc: OSError, directory: Path) -> str:
    import errno

    if exc.errno == errno.ENOSPC:
        return f"The disk holding {directory} is full; free space or ask an admin, then start the export again."
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR):
        return (
            f"The export directory {directory} is not writable; an admin must fix its permissions."
        )
    return f"Writing the export file failed ({exc.strerror}); start the export again."


def _remove(path: Path) -> None:
    """Best-effort cleanup: a missing file or an unusable directory is not a new error."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove %s", path)


def _close_quietly(pages) -> None:
    """Close a page generator now (its connection goes back to the pool) rather than when the
    collector finds it; a connection that died meanwhile fails its rollback, which is moot."""
    try:
        pages.close()
    except Exception as exc:
        log.debug("closing an export page reader failed: %s", describe(exc))


def _pin(reads: Engine, job: dict) -> dict:
    """The job's snapshot as the store its rows are read from pins it."""
    max_id = store_for(reads).pin_of_snapshot(job["snapshot_max_id"], job["snapshot_at"])
    return {"as_of": job["snapshot_at"], "max_id": max_id}


def _text_plan(job: dict, fields: tuple[str, ...]) -> TextPlan | None:
    """What the span store's engine writes of the job's file (None: rows for the writers;
    local time columns are written by the row path)."""
    if _zone(job) is not None:
        return None
    if job["format"] == "csv":
        return csv_line_plan(fields)
    if job["format"] in ("json", "jsonl"):
        return json_text_plan(fields)
    if job["format"] == "parquet":
        return parquet_plan(fields)
    return None


def _read_rows(text_plan: TextPlan | None, config: WorkerConfig) -> int:
    """Rows per read on the span store: CSV's lines come as one column of bytes (no Python
    object per value), so its reads are larger (fewer windows each re-reading the parts'
    edges; docs/span-store-internals.md, "Exports")."""
    lines = text_plan is not None and text_plan.reads_lines
    return config.span_store_line_rows if lines else config.span_store_read_rows


def _windows(
    engine: Engine, job: dict, scope: Scope, spec: FilterSpec, config: WorkerConfig, fields
):
    """The job's windows on the span store (`span_store_pages.job_windows`), else None."""
    if not store_for(engine).pages_exports_by_window:
        return None
    return job_windows(
        engine,
        scope,
        spec,
        page_size=config.page_size,
        read_rows=_read_rows(_text_plan(job, fields), config),
        row_limit=job["row_limit"],
        **_pin(engine, job),
    )


def _pages(
    engine: Engine,
    job: dict,
    scope: Scope,
    spec: FilterSpec,
    fields,
    config: WorkerConfig,
    plan: Windows | None,
):
    """(row count, write function) per page, read from `engine` (where spans are read:
    `span_reads`); on the span store by the job's windows `plan`. CSV takes the COPY fast path
    where the store has one (`Store.copies_csv`: PostgreSQL): the explorer's filter picks each
    page's ids, and the database writes their CSV lines (stored columns only: an expression
    field is written by the row path)."""
    pinned = _pin(engine, job)
    zone = _zone(job)
    # not "metadata:<key>"; local time columns are written by the row path
    copyable = zone is None and all(f in FIELDS and FIELDS[f].plain for f in fields)
    if job["format"] == "csv" and store_for(engine).copies_csv and copyable:
        pages = iter_span_ids(engine, scope, spec, page_size=config.copy_page_size, **pinned)
        copies = copy_ahead(engine, job["org_id"], pages, fields, config.copy_ahead)
        try:
            for ids, lines in copies:
                yield (
                    len(ids),
                    lambda writer, n, lines=lines, ids=ids: writer.write_bytes(
                        lines
                        if n == len(ids)
                        else copy_csv_rows(engine, job["org_id"], ids[:n], fields)
                    ),
                )
        finally:
            _close_quietly(copies)
            _close_quietly(pages)
        return
    if plan is not None:  # the span store (`Store.pages_exports_by_window`)
        text_plan = _text_plan(job, fields)
        yield from window_pages(
            engine,
            scope,
            spec,
            fields,
            text_plan=text_plan,
            zone=zone,
            pinned=pinned,
            page_size=config.page_size,
            read_rows=_read_rows(text_plan, config),
            row_limit=job["row_limit"],
            plan=plan,
        )
        return
    pages = iter_span_pages(
        engine, scope, spec, fields=fields, page_size=config.page_size, **pinned
    )
    try:
        for page in pages:
            yield (
                len(page),
                lambda writer, n, page=page: writer.write_rows(with_local(page[:n], zone, fields)),
            )
    finally:
        _close_quietly(pages)


def run_job(engine: Engine, job: dict, config: WorkerConfig) -> Status:
    """Run the job, starting it over after transient database errors; returns its end state."""
    started = time.monotonic()
    while True:
        outcome = _attempt(engine, job, config)
        if isinstance(outcome, Status):
            break
        outcome = _next_attempt(engine, job, config, outcome)
        if isinstance(outcome, Status):
            break
        job = outcome
    prometheus.EXPORT_SECONDS.labels(outcome.value).observe(time.monotonic() - started)
    return outcome


def _failed_store(exc: BaseException) -> str:
    """Which store a transient error came from, for the job's message: the span store (its
    driver's errors, or one that could not be opened) or the database of the job itself."""
    orig = getattr(exc, "orig", None) or exc
    if type(orig).__module__.startswith("clickhouse_connect") or "span store" in str(orig):
        return "span store"
    return "database"


def _next_attempt(
    engine: Engine, job: dict, config: WorkerConfig, exc: BaseException
) -> dict | Status:
    """After a transient error: the job claimed again by this worker for its next attempt
    (after a backoff), or the state it ends in when the attempts are spent or it was lost."""
    job_id, attempts = job["id"], job["attempts"]
    if attempts >= MAX_ATTEMPTS:
        log.warning("export %s: database error on its last attempt (%s)", job_id, describe(exc))
        store = _failed_store(exc)
        message = (
            f"The {store} failed the export's last of {MAX_ATTEMPTS} attempts "
            f"({describe(exc)[:160]}); start it again once the {store} is healthy."
        )
        try:
            _finish(engine, job_id, config, status=Status.FAILED, error=message)
        except Exception as again:  # still down: the next claim fails it (attempts are spent)
            if not is_transient(again):
                raise
        return Status.FAILED
    delay = min(RETRY_BACKOFF_S * 2 ** (attempts - 1), config.heartbeat_timeout.total_seconds() / 2)
    log.warning(
        "export %s: transient database error on attempt %d of %d (%s); retrying in %.0f s",
        job_id,
        attempts,
        MAX_ATTEMPTS,
        describe(exc),
        delay,
    )
    prometheus.EXPORT_RETRIES.inc()
    for _ in range(RECONNECT_TRIES):
        time.sleep(delay)
        try:
            with engine.begin() as conn:
                row = (
                    conn.execute(
                        _owned(job_id, config)
                        .values(
                            attempts=export_jobs.c.attempts + 1,
                            heartbeat_at=_now(),
                            progress=0,
                            rows_written=0,
                        )
                        .returning(*export_jobs.c)
                    )
                    .mappings()
                    .first()
                )
        except Exception as again:
            if not is_transient(again):
                raise
            log.warning("export %s: database still unavailable (%s)", job_id, describe(again))
            continue
        if row is None:  # cancelled, or another worker took it over meanwhile
            return Status.CANCELLED
        return dict(row)
    # The database stays away: leave the job processing; once its heartbeat is stale, the
    # next claim (by any worker) takes it over as another attempt.
    return Status.PROCESSING


def _zone(job: dict) -> Zone | None:
    """The zone of the job's local time columns (None: UTC columns only, as before zones)."""
    name = job.get("time_zone")
    return Zone(name) if name else None


def _announce(engine: Engine, job: dict) -> None:
    """A repeating export's "file is ready" webhook; the file is ready whatever happens here
    (a lost database loses only the message: the job list still shows the file)."""
    try:
        announce_ready(engine, job)
    except Exception as exc:
        log.warning("export %s: its webhook could not be queued (%s)", job["id"], describe(exc))


def _attempt(engine: Engine, job: dict, config: WorkerConfig) -> Status | BaseException:
    """One pass over the job's rows into its file: the state it ended in, or the transient
    database error that interrupted it (the caller decides on a retry)."""
    job_id = job["id"]
    final_name = f"export-{job['org_id']}-{job_id}{file_suffix(job['format'], job['compression'])}"
    temp = config.export_dir / f".{final_name}.{config.worker_id}.part"
    scope = Scope(org_id=job["org_id"], role=Role.ADMIN, username=job["created_by"])
    spec = FilterSpec.from_json(job["filter_json"])
    fields = tuple(job["fields"])
    try:
        config.export_dir.mkdir(parents=True, exist_ok=True)
        reads = span_reads(engine)  # the span store, when set: a store that is down is transient
        plan = _windows(reads, job, scope, spec, config, fields)
        # the span store's total is the matching raw rows its windows numbered (at least the
        # job's rows: progress an estimate, 1.0 at the end); the rows written are counted exactly
        counted = plan.matching if plan else count_spans(reads, scope, spec, **_pin(reads, job))
        total = min(job["row_limit"], counted)
        columns = output_fields(fields, _zone(job))
        writer, sink = open_writer(job["format"], job["compression"], temp, columns)
        written = 0
        pages = _pages(reads, job, scope, spec, fields, config, plan)
        try:
            for count, write in pages:
                count = min(count, job["row_limit"] - written)
                write(writer, count)
                written += count
                if not _still_mine(
                    engine, job_id, config, written / total if total else 1.0, written
                ):
                    log.info("export %s was cancelled or taken over; stopping", job_id)
                    return Status.CANCELLED
                if written >= job["row_limit"]:
                    break
        finally:
            _close_quietly(pages)  # stops the COPY-ahead threads now, also when a page failed
            writer.close()
        os.replace(temp, config.export_dir / final_name)
        finished = _finish(
            engine,
            job_id,
            config,
            status=Status.COMPLETED,
            progress=1.0,
            rows_written=written,
            file_size=sink.size,
            checksum_sha256=sink.sha256.hexdigest(),
            file_name=final_name,
            expires_at=_now() + config.retention,
        )
        if not finished:  # cancelled between the last page and the rename
            _remove(config.export_dir / final_name)
            return Status.CANCELLED
        _announce(engine, job)
        return Status.COMPLETED
    except OSError as exc:
        _finish(
            engine,
            job_id,
            config,
            status=Status.FAILED,
            error=_user_message(exc, config.export_dir),
        )
        return Status.FAILED
    except QueryTooLarge as exc:  # the read's own memory bound: narrowing it is the answer
        _finish(engine, job_id, config, status=Status.FAILED, error=str(exc))
        return Status.FAILED
    except Exception as exc:
        if is_transient(exc):
            return exc
        log.exception("export %s failed", job_id)
        _finish(
            engine,
            job_id,
            config,
            status=Status.FAILED,
            error="The export failed unexpectedly; start it again, and tell an admin if it repeats.",
        )
        return Status.FAILED
    finally:
        _remove(temp)


def maintenance(engine: Engine, config: WorkerConfig, now: datetime | None = None) -> dict:
    """Expire old files, drop old audit entries and orphaned partial files."""
    now = now or _now()
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


def work_once(engine: Engine, config: WorkerConfig) -> Status | None:
    """Make the jobs of repeating exports that are due, then claim and run one job; None when
    there was nothing to do."""
    run_due(engine)
    job = claim_next(engine, config)
    return run_job(engine, job, config) if job else None
