"""What runs beside the web server in its process: the embedded worker (unless workers run
as their own processes), the heartbeat watchdog, and the demo traffic when asked for.
Stopping drains the OTLP writer, so a shutdown drops no span it has acknowledged, then
closes the span store (chDB holds its folder until then)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from observatory_core.base.settings import Settings
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
        # last: the writer and the worker above may still use the span store while they stop
        from observatory_core.storage.clickhouse.current import close_span_stores

        close_span_stores()


def start_background(settings: Settings, port: int) -> Background:
    from observatory_core.alerts.loops import start_watchdog

    engine = get_engine(settings.database_url)
    background = Background()
    if settings.embedded_worker:
        from observatory_core.runtime.worker import start_thread

        background.worker = start_thread(engine, settings)
    start_watchdog(engine, background.watchdog_stop)
    if settings.metrics_port:  # Prometheus on a port of its own (docs/operations.md)
        from observatory_core.api.ops_collector import register
        from observatory_core.base.prometheus import serve_on_port

        register()

        serve_on_port(settings.metrics_port, settings.metrics_bind)
    if settings.demo_traffic_per_s > 0:
        from observatory_core.demo.traffic import start_demo_traffic

        background.traffic = start_demo_traffic(engine, settings.demo_traffic_per_s, port)
    return background


def send_small_writes_at_once(port: int) -> int:
    """Set TCP_NODELAY on the server's listening socket(s); accepted connections inherit it.

    Streamlit binds the socket itself with protocol 0, and asyncio only turns Nagle's
    algorithm off for sockets created with IPPROTO_TCP. Without this, every answer on a
    reused (keep-alive) connection waits ~40 ms for the client's delayed ACK between its
    headers and its body. Returns how many sockets were changed (0 where /proc is missing).
    """
    import os
    import socket

    changed = 0
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return 0
    for fd in fds:
        for family in (socket.AF_INET6, socket.AF_INET):
            try:
                sock = socket.socket(family, socket.SOCK_STREAM, 0, fileno=os.dup(fd))
            except OSError:
                continue
            try:
                listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                if listening and sock.getsockname()[1] == port:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    changed += 1
            except OSError:
                pass
            finally:
                sock.close()
            break
    return changed
