"""The series read at scrape time (database state, pool use, queue depth, evaluation lag).

They read the database and the ingest queue, so they live above both, here beside the
/ops/metrics route; a process that serves its metrics on a port of its own (the worker)
registers them too. The counters and histograms that code updates live in `base.prometheus`.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from observatory_core.base.prometheus import last_alert_round

EXPORT_STATES = ("pending", "processing", "completed", "failed", "cancelled", "expired")
_registered = threading.Lock()
_done: list[bool] = []


def register() -> None:
    """Add the scrape-time series to this process's registry (once)."""
    with _registered:
        if not _done:
            REGISTRY.register(_Scraped())
            _done.append(True)


class _Scraped(Collector):
    """Series read at scrape time: database state, pool use, queue depth, evaluation lag."""

    def describe(self):
        return []  # registering must not collect (that would import and query at import time)

    def collect(self):
        from observatory_core.base.settings import get_settings
        from observatory_core.storage.engine import get_engine

        yield from self._process()
        try:
            engine = get_engine(get_settings().database_url)
        except Exception:
            return
        yield from self._pool(engine)
        yield from self._database(engine)

    @staticmethod
    def _process():
        depth = GaugeMetricFamily(
            "observatory_ingest_queue_spans",
            "Spans accepted and waiting for the OTLP writer (429 above OBSERVATORY_INGEST_MAX_PENDING).",
        )
        from observatory_core.ingest import service

        pair = getattr(service, "_pair", None)  # None until the first OTLP request
        depth.add_metric([], pair[1].pending if pair else 0)
        yield depth
        last = last_alert_round()
        if last is not None:  # only in a process that evaluates alerts
            lag = GaugeMetricFamily(
                "observatory_alert_evaluation_lag_seconds",
                "Seconds since this process last finished an alert evaluation round.",
            )
            lag.add_metric([], time.monotonic() - last)
            yield lag

    @staticmethod
    def _pool(engine):
        pool = engine.pool
        if not hasattr(pool, "checkedout"):
            return
        used = GaugeMetricFamily(
            "observatory_db_pool_connections",
            "Database connections of this process's pool: in_use (checked out) or idle.",
            labels=["state"],
        )
        used.add_metric(["in_use"], pool.checkedout())
        used.add_metric(["idle"], pool.checkedin())
        yield used
        if hasattr(pool, "size"):
            size = GaugeMetricFamily(
                "observatory_db_pool_size", "Connections the pool keeps open (overflow beyond)."
            )
            size.add_metric([], pool.size())
            yield size

    @staticmethod
    def _database(engine):
        from sqlalchemy import func, select

        from observatory_core.storage.schema import export_jobs, worker_heartbeats

        up = GaugeMetricFamily(
            "observatory_database_up", "1 when the scrape could read the database."
        )
        try:
            with engine.connect() as conn:
                counts = dict(
                    conn.execute(
                        select(export_jobs.c.status, func.count()).group_by(export_jobs.c.status)
                    ).all()
                )
                newest = conn.execute(select(func.max(worker_heartbeats.c.seen_at))).scalar()
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily(
            "observatory_export_jobs", "Export jobs of every org by state.", labels=["state"]
        )
        for state in EXPORT_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        if newest is not None:
            from datetime import UTC, datetime

            age = GaugeMetricFamily(
                "observatory_worker_heartbeat_age_seconds",
                "Seconds since any worker last reported in (alert rounds beat each time).",
            )
            age.add_metric([], max(0.0, (datetime.now(UTC) - newest).total_seconds()))
            yield age
