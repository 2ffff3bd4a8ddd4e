"""The export worker: claim a job, stream its rows into a file, keep a heartbeat.

A transient database error (a dropped connection, a serialization failure or deadlock, a
restarting server) starts the job over on this worker after a backoff, counted as another
attempt; only permanent errors fail it at once. The job itself (state, heartbeat, progress,
file) stays in `DATABASE_URL` while its rows may come from the span store; a span store that is
down or busy is a transient error like a lost database. Claims are `job_claims.py`, one pass
into the file `job_attempt.py`, where the pages come from `page_sources.py`, the periodic
housekeeping `housekeeping.py`.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.engine import Engine

from observatory_core.base import prometheus
from observatory_core.exports.job_attempt import attempt
from observatory_core.exports.job_claims import MAX_ATTEMPTS, claim_next, finish, owned, utc_now
from observatory_core.exports.jobs import Status
from observatory_core.exports.schedules import run_due
from observatory_core.exports.worker_config import WorkerConfig
from observatory_core.storage.schema import export_jobs
from observatory_core.storage.transient import describe, is_transient

log = logging.getLogger("observatory.exports")
RETRY_BACKOFF_S = 2.0  # 2, 4, 8, 16 s before attempts 2-5 (at most half the heartbeat timeout)
RECONNECT_TRIES = 3  # waits for the database before leaving the job to be taken over


def run_job(engine: Engine, job: dict, config: WorkerConfig) -> Status:
    """Run the job, starting it over after transient database errors; returns its end state."""
    started = time.monotonic()
    while True:
        outcome = attempt(engine, job, config)
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
            finish(engine, job_id, config, status=Status.FAILED, error=message)
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
                        owned(job_id, config)
                        .values(
                            attempts=export_jobs.c.attempts + 1,
                            heartbeat_at=utc_now(),
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


def work_once(engine: Engine, config: WorkerConfig) -> Status | None:
    """Make the jobs of repeating exports that are due, then claim and run one job; None when
    there was nothing to do."""
    run_due(engine)
    job = claim_next(engine, config)
    return run_job(engine, job, config) if job else None
