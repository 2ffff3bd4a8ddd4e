"""What runs beside the web server in its process: the embedded worker (unless workers run
as their own processes), the heartbeat watchdog, and the demo traffic when asked for.
Stopping drains the OTLP writer, so a shutdown drops no span it has acknowledged."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from observatory_core.settings import Settings
from observatory_core.storage.engine import get_engine


@dataclass
class Background:
    worker: tuple[threading.Thread, threading.Event] | None = None
    watchdog_stop: threading.Event = field(default_factory=threading.Event)
    traffic: object | None = None

    def stop(self) -> None:
        from observatory_core.ingest.service import stop_ingest

        self.watchdog_stop.set()
        if self.traffic is not None:
            self.traffic.stop()
        stop_ingest()
        if self.worker:
            thread, stop = self.worker
            stop.set()
            thread.join(30)


def start_background(settings: Settings, port: int) -> Background:
    from observatory_core.alerts.loops import start_watchdog

    engine = get_engine(settings.database_url)
    background = Background()
    if settings.embedded_worker:
        from observatory_core.worker import start_thread

        background.worker = start_thread(engine, settings)
    start_watchdog(engine, background.watchdog_stop)
    if settings.demo_traffic_per_s > 0:
        from observatory_core.demo.traffic import start_demo_traffic

        background.traffic = start_demo_traffic(engine, settings.demo_traffic_per_s, port)
    return background
