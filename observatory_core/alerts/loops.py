"""The alert loops the worker runs beside exports, each on its own thread so that a long
export never delays evaluation and a slow webhook never delays either; and the watchdog the
web server runs, which notices when no worker reports in (a dead worker cannot)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from observatory_core.alerts.evaluate import CycleReport, evaluate
from observatory_core.alerts.webhooks import deliver_due
from observatory_core.base import prometheus
from observatory_core.storage.dialect import upsert
from observatory_core.storage.schema import worker_heartbeats
from observatory_core.storage.span_reads import span_reads
from observatory_core.storage.transient import describe, is_transient

log = logging.getLogger("observatory.alerts")
WATCHDOG_EVERY_S = 15.0


def beat(engine: Engine, worker_id: str, now: datetime | None = None) -> None:
    with engine.begin() as conn:
        stmt = upsert(conn, worker_heartbeats).values(
            worker_id=worker_id, seen_at=now or datetime.now(UTC)
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[worker_heartbeats.c.worker_id],
                set_={"seen_at": stmt.excluded.seen_at},
            )
        )


def _forever(
    name: str, every_s: float, stop: threading.Event, work, *, first_wait_s: float = 0.0
) -> None:
    if first_wait_s and stop.wait(first_wait_s):
        return
    failing = False  # a lost database is logged once when it goes and once when it is back
    while not stop.is_set():
        try:
            work()
            if failing:
                log.info("%s: the database is reachable again", name)
            failing = False
        except Exception as exc:  # the loop must outlive one bad round; the next round retries
            if name == "alerts":
                prometheus.ALERT_FAILURES.inc()
            if not is_transient(exc):
                log.exception("%s round failed", name)
            elif not failing:
                log.warning(
                    "%s round: database unavailable (%s); retrying every %.0f s",
                    name,
                    describe(exc),
                    every_s,
                )
                failing = True
        stop.wait(every_s)


def alert_round(engine: Engine, worker_id: str, now: datetime | None = None) -> CycleReport:
    """One round of the worker's alert loop: its heartbeat, then a cycle whose rules' spans
    and rollups are read where they are kept (the span store's when it is set)."""
    started = time.monotonic()
    beat(engine, worker_id)
    report = evaluate(engine, now, spans=span_reads(engine))
    prometheus.alert_round(time.monotonic() - started)
    if report.transitions:
        log.info("alerts: %d transitions over %d groups", report.transitions, report.groups)
    return report


def start_loops(
    engine: Engine, worker_id: str, every_s: float, stop: threading.Event
) -> list[threading.Thread]:
    threads = [
        threading.Thread(
            target=_forever,
            args=("alerts", every_s, stop, lambda: alert_round(engine, worker_id)),
            name="observatory-alerts",
            daemon=True,
        ),
        threading.Thread(
            target=_forever,
            args=("webhooks", 1.0, stop, lambda: deliver_due(engine)),
            name="observatory-webhooks",
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    return threads


def start_watchdog(engine: Engine, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(
        target=_forever,
        args=("watchdog", WATCHDOG_EVERY_S, stop, lambda: evaluate(engine, kinds="heartbeat")),
        # after start-up, when the worker has beaten once and the start-up writes are done
        kwargs={"first_wait_s": WATCHDOG_EVERY_S},
        name="observatory-watchdog",
        daemon=True,
    )
    thread.start()
    return thread
