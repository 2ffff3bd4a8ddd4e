"""The PostgreSQL server's memory for one measuring process's reads (bench/clickhouse_app_case.py).

chDB runs inside the measuring process, so that process's peak RSS is the store's; PostgreSQL
answers from backend processes of its own, which the client's RSS leaves out. This samples the
RSS of every backend this process's engine opened (`SELECT pg_backend_pid()` on each new
connection; the server on this machine) every 50 ms, and keeps the peak. A backend's RSS counts
the shared buffers it touched; the parallel workers a query may start are not sampled.
"""

from __future__ import annotations

import threading
import time

import psutil
from sqlalchemy import event


class BackendRss:
    """The peak RSS of `engine`'s PostgreSQL backends, sampled from creation to `stop`."""

    def __init__(self, engine) -> None:
        self.pids: set[int] = set()
        self.peak = 0
        event.listen(engine, "connect", self._connected)
        engine.dispose()  # connections opened before now were not seen: open them again
        with engine.connect() as conn:  # one at least, before the first read
            self.pids.add(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _connected(self, dbapi_connection, _record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.pids.add(cursor.fetchone()[0])
        dbapi_connection.rollback()  # no transaction left open for the pool to hand out

    def _watch(self) -> None:
        while not self._done.is_set():
            total = 0
            for pid in list(self.pids):
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:  # a closed connection's backend is gone
                    self.pids.discard(pid)
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
