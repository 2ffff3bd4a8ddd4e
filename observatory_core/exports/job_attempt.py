"""One attempt at a job: its rows, page by page, into a file written under a temporary name
and renamed into place only when complete, so a partial file can never be downloaded; the
heartbeat and progress written after each page. A transient database error is handed back for
the worker to decide on a retry; any other failure fails the job with a sentence for its owner."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import QueryTooLarge
from observatory_core.exports.job_claims import finish, still_mine, utc_now
from observatory_core.exports.jobs import Status
from observatory_core.exports.local_times import output_fields
from observatory_core.exports.page_sources import (
    close_quietly,
    job_zone,
    pages_of,
    pin_of,
    span_store_windows,
)
from observatory_core.exports.schedules import announce_ready
from observatory_core.exports.worker_config import WorkerConfig
from observatory_core.exports.writers import file_suffix, open_writer
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.span_reads import span_reads
from observatory_core.storage.transient import describe, is_transient
from observatory_core.traces.query import count_spans

log = logging.getLogger("observatory.exports")


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


def _announce(engine: Engine, job: dict) -> None:
    """A repeating export's "file is ready" webhook; the file is ready whatever happens here
    (a lost database loses only the message: the job list still shows the file)."""
    try:
        announce_ready(engine, job)
    except Exception as exc:
        log.warning("export %s: its webhook could not be queued (%s)", job["id"], describe(exc))


def attempt(engine: Engine, job: dict, config: WorkerConfig) -> Status | BaseException:
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
        plan = span_store_windows(reads, job, scope, spec, config, fields)
        # the span store's total is the matching raw rows its windows numbered (at least the
        # job's rows: progress an estimate, 1.0 at the end); the rows written are counted exactly
        counted = plan.matching if plan else count_spans(reads, scope, spec, **pin_of(reads, job))
        total = min(job["row_limit"], counted)
        columns = output_fields(fields, job_zone(job))
        writer, sink = open_writer(job["format"], job["compression"], temp, columns)
        written = 0
        pages = pages_of(reads, job, scope, spec, fields, config, plan)
        try:
            for count, write in pages:
                count = min(count, job["row_limit"] - written)
                write(writer, count)
                written += count
                if not still_mine(
                    engine, job_id, config, written / total if total else 1.0, written
                ):
                    log.info("export %s was cancelled or taken over; stopping", job_id)
                    return Status.CANCELLED
                if written >= job["row_limit"]:
                    break
        finally:
            close_quietly(pages)  # stops the COPY-ahead threads now, also when a page failed
            writer.close()
        os.replace(temp, config.export_dir / final_name)
        finished = finish(
            engine,
            job_id,
            config,
            status=Status.COMPLETED,
            progress=1.0,
            rows_written=written,
            file_size=sink.size,
            checksum_sha256=sink.sha256.hexdigest(),
            file_name=final_name,
            expires_at=utc_now() + config.retention,
        )
        if not finished:  # cancelled between the last page and the rename
            _remove(config.export_dir / final_name)
            return Status.CANCELLED
        _announce(engine, job)
        return Status.COMPLETED
    except OSError as exc:
        finish(
            engine,
            job_id,
            config,
            status=Status.FAILED,
            error=_user_message(exc, config.export_dir),
        )
        return Status.FAILED
    except QueryTooLarge as exc:  # the read's own memory bound: narrowing it is the answer
        finish(engine, job_id, config, status=Status.FAILED, error=str(exc))
        return Status.FAILED
    except Exception as exc:
        if is_transient(exc):
            return exc
        log.exception("export %s failed", job_id)
        finish(
            engine,
            job_id,
            config,
            status=Status.FAILED,
            error="The export failed unexpectedly; start it again, and tell an admin if it repeats.",
        )
        return Status.FAILED
    finally:
        _remove(temp)
