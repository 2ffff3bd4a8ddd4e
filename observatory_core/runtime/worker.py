"""The background worker: exports, retention and declared dimensions' back-fills on this
thread, alert evaluation and webhooks on their own.

Embedded mode runs it as a thread of the server; production runs any number of
`python -m observatory_core worker` processes against PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from observatory_core.base.settings import Settings
from observatory_core.exports.housekeeping import maintenance
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.rollups.dimensions import backfill_step
from observatory_core.runtime.retention import restamp_span_store, run_and_record
from observatory_core.storage.transient import describe, is_transient

log = logging.getLogger("observatory.worker")
MAINTENANCE_EVERY = timedelta(minutes=5)


def config_from(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        export_dir=settings.export_dir,
        heartbeat_timeout=timedelta(seconds=settings.worker_heartbeat_s),
        retention=timedelta(days=settings.export_retention_days),
        audit_retention=timedelta(days=settings.audit_retention_days),
        page_size=settings.export_page_size,
        # COPY pages carry only ids, so they can be larger: 20k by default.
        copy_page_size=settings.export_page_size * 4,
    )


def run_forever(engine: Engine, settings: Settings, stop: threading.Event) -> None:
    """Work until `stop` is set; an error in one round is logged and the loop goes on."""
    config = config_from(settings)
    next_maintenance = next_retention = datetime.now(UTC)
    log.info("worker %s started", config.worker_id)
    from observatory_core.alerts.loops import start_loops

    helpers = start_loops(engine, config.worker_id, settings.alert_eval_s, stop)
    failing = False  # a lost database is logged once, not with a traceback every second
    while not stop.is_set():
        try:
            if datetime.now(UTC) >= next_maintenance:
                maintenance(engine, config)
                next_maintenance = datetime.now(UTC) + MAINTENANCE_EVERY
            if datetime.now(UTC) >= next_retention:
                # bounded batches; a run cut short at its limit goes on at the next one
                next_retention = datetime.now(UTC) + timedelta(
                    minutes=settings.retention_every_minutes
                )
                done = run_and_record(engine)
                if done.spans or done.partitions_dropped:
                    log.info(
                        "retention: %d spans, partitions dropped %s, %d bytes back in %.1f s",
                        done.spans,
                        done.partitions_dropped,
                        done.bytes_reclaimed,
                        done.seconds,
                    )
                restamped = restamp_span_store(engine)
                if restamped.said:
                    (log.warning if restamped.failed else log.info)("retention: %s", restamped.said)
            exported = work_once(engine, config)
            # one chunk of a declared dimension's back-fill per round (rollups/dimensions.py)
            backfilled = backfill_step(engine)
            if exported is None and backfilled is None:
                stop.wait(settings.worker_poll_s)
            if failing:
                log.info("worker: the database is reachable again")
            failing = False
        except Exception as exc:  # keep the loop alive; the job itself is failed by run_job
            if not is_transient(exc):
                log.exception("worker round failed")
            elif not failing:
                log.warning("worker round: database unavailable (%s); retrying", describe(exc))
                failing = True
            stop.wait(settings.worker_poll_s)
    for thread in helpers:
        thread.join(10)
    log.info("worker %s stopped", config.worker_id)


def start_thread(engine: Engine, settings: Settings) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(
        target=run_forever, args=(engine, settings, stop), name="observatory-worker", daemon=True
    )
    thread.start()
    return thread, stop


def main(engine: Engine, settings: Settings) -> None:
    """`python -m observatory_core worker`: run until interrupted."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if settings.metrics_port:  # a worker process has its own series (docs/operations.md)
        from observatory_core.api.ops_collector import register
        from observatory_core.base.prometheus import serve_on_port

        register()

        serve_on_port(settings.metrics_port, settings.metrics_bind)
    try:
        run_forever(engine, settings, stop)
    except KeyboardInterrupt:
        stop.set()
