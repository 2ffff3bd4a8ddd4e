"""Group commit for the receiver: writer threads store what concurrent requests hand them.

Each request waits until its spans are committed (a 200 means stored), but requests that
arrive together share one transaction, so the rollup fold and the commit are paid once per
group, not once per request. Rows the database refuses are isolated (`isolate`) and handed
back to their request, so a bad span costs neither its batch-mates nor the other requests.
The queue is bounded: past `max_pending` spans a request is turned away with a retry hint
instead of piling spans up in memory. On stop the queue is drained first, so nothing
acknowledged or accepted is dropped.

A writer that finds requests still being decoded (`arriving`), or fewer requests queued than
were in flight since it took its last group, waits for them, at most `LINGER_S` (up to
`LINGER_MAX_S` when writes are slow), before it takes its group: clients that were answered
post again, and the first one decoded would otherwise be written alone (or a group cut in
two would stay in halves for good). On the
ClickHouse span store each group is one insert with a fixed cost (five views, its parts
merged later), so groups of one 512-span request instead of four cost about twice the CPU
per span (docs/span-store-internals.md, "The write path").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Engine

from observatory_core.base import prometheus
from observatory_core.ingest.isolate import write_isolating
from observatory_core.ingest.persist import write_spans
from observatory_core.storage.engine import is_unavailable
from observatory_core.storage.stores import store_for

log = logging.getLogger("observatory.ingest")
# How long a writer waits for requests still being decoded (or for the last group's clients to
# post again) before it takes its group: a request of 512 spans decodes in some 15-60 ms; a
# group's write takes hundreds.
LINGER_S = 0.05
LINGER_MAX_S = 0.2


def _answer(future: Future, outcome: Any) -> None:
    """Answer one request of a group. A request whose waiter gave up (its future cancelled:
    `asyncio.wrap_future` cancels it with the route's task, as on a forced shutdown) is not
    answered: setting it raises, which would end this writer thread and leave every later
    request waiting for good. Its rows were written (a resend is stored once)."""
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        log.info("ingest writer: a request's waiter left before its answer")


class Overloaded(Exception):
    """Too many spans are waiting to be written; retry after a moment."""


class ShuttingDown(Exception):
    """The server is stopping; another instance (or this one, restarted) will take the retry."""


class Arrival:
    """A request being decoded (`BatchWriter.arriving`): its rows go in with `submit`."""

    def __init__(self, writer: BatchWriter) -> None:
        self.writer = writer
        self.settled = False

    def submit(self, rows: list[dict[str, Any]]) -> Future:
        return self.writer.submit(rows, self)

    def refused(self) -> None:
        """No rows will come: no writer waits for this request from now on (before the
        refusal's own bookkeeping, which reads the database)."""
        self.writer._settle(self)


class BatchWriter:
    """Writer threads take whole groups from one bounded queue."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_pending: int = 50_000,
        group_spans: int = 5_000,
        threads: int | None = None,
    ):
        self.engine = engine
        self.max_pending = max_pending
        self.group_spans = group_spans
        self._queue: deque[tuple[list[dict[str, Any]], Future]] = deque()
        self._cond = threading.Condition()
        self._pending = 0
        self._arriving = 0  # requests being decoded, about to `submit`
        # Requests in flight (being written, queued, being decoded) at their most since the
        # last group was taken (`_peak`), kept when a group is taken as what the next group
        # waits for (`_expect`): its clients post again. The size of the last group alone
        # kept a group cut in two halves in two: each half's clients post again while the
        # other half is written, and the next group found as many as the last had.
        self._writing = 0
        self._peak = 0
        self._expect = 0
        self._last_write_s = 0.0  # how long the last group's write took
        self._stopping = False
        # As many writers as the store serves side by side (`Store.writer_threads`).
        count = threads or store_for(engine).writer_threads
        self._threads = [
            threading.Thread(target=self._run, name=f"observatory-ingest-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    @contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Around a request's decoding: a writer about to take a group waits for it (at most
        its linger, `LINGER_S` to `LINGER_MAX_S`) until its rows are submitted through the answered `Arrival` or the block
        ends, so requests posted together are written together."""
        arrival = Arrival(self)
        with self._cond:
            self._arriving += 1
        try:
            yield arrival
        finally:
            self._settle(arrival)

    def _settle(self, arrival: Arrival) -> None:
        with self._cond:
            self._settled(arrival)

    def _settled(self, arrival: Arrival) -> None:  # under self._cond
        if not arrival.settled:
            arrival.settled = True
            self._arriving -= 1
            self._cond.notify_all()

    def submit(self, rows: list[dict[str, Any]], arrival: Arrival | None = None) -> Future:
        """A future that completes when `rows` are committed, with the (row, reason) pairs the
        database refused; it fails only when the database is unavailable. `arrival`: the
        request's, no longer waited for once its rows are queued (or refused)."""
        future: Future = Future()
        with self._cond:
            if arrival is not None:
                self._settled(arrival)
            if self._stopping:
                prometheus.ingest_refused("stopping", len(rows))
                raise ShuttingDown
            if self._pending and self._pending + len(rows) > self.max_pending:
                prometheus.ingest_refused("overloaded", len(rows))
                raise Overloaded
            self._queue.append((rows, future))
            self._pending += len(rows)
            self._peak = max(self._peak, self._writing + len(self._queue) + self._arriving)
            self._cond.notify_all()
        return future

    def _next_group(self) -> list[tuple[list[dict[str, Any]], Future]] | None:
        with self._cond:
            while True:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return None
                until = time.monotonic() + self._linger()
                while (  # until the queue is taken (by another thread too): then wait anew
                    self._queue
                    # those in flight it could take: not another thread's group being written
                    and (self._arriving or len(self._queue) < self._expect - self._writing)
                    and not self._stopping
                    and sum(len(rows) for rows, _ in self._queue) < self.group_spans
                    and (left := until - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
                if self._queue:  # another writer thread may have taken it all meanwhile
                    break
            group, size = [], 0
            while self._queue and (not group or size + len(self._queue[0][0]) <= self.group_spans):
                item = self._queue.popleft()
                group.append(item)
                size += len(item[0])
            self._writing += len(group)
            self._expect = self._peak
            self._peak = self._writing + len(self._queue) + self._arriving
            return group

    def _linger(self) -> float:
        """How long a group waits for its clients: `LINGER_S`, or up to half the last write
        (at most `LINGER_MAX_S`) when writes are slow (a loaded machine), where a request
        decodes slowly too and half the clients missed the wait, each group then half full."""
        return max(LINGER_S, min(self._last_write_s / 2, LINGER_MAX_S))

    def _run(self) -> None:
        while (group := self._next_group()) is not None:
            started = time.monotonic()
            try:
                outcomes = self._write(group)
            except Exception as exc:  # a fault of ours: no request is left waiting on it
                log.exception("ingest writer failed")
                outcomes = [exc] * len(group)
            self._last_write_s = time.monotonic() - started
            with self._cond:
                self._pending -= sum(len(rows) for rows, _ in group)
                self._writing -= len(group)
            # The depth drops before any request hears back: a scrape after a 200 reads it.
            for (_, future), outcome in zip(group, outcomes, strict=True):
                _answer(future, outcome)

    def _write(
        self, group: list[tuple[list[dict[str, Any]], Future]]
    ) -> list[list[tuple[dict[str, Any], str]] | BaseException]:
        """One transaction for the group; rows the database refuses cost only themselves.
        Returns, per request, the (row, reason) pairs refused or the exception it fails with."""
        rows = [r for item_rows, _ in group for r in item_rows]
        try:
            outcome = write_isolating(self.engine, rows, write=write_spans)
        except Exception as exc:  # the database is unavailable: every request may retry
            log.warning("ingest write failed: %s", exc)
            reason = "database_unavailable" if is_unavailable(exc) else "database_refused"
            prometheus.ingest_refused(reason, len(rows))
            return [exc] * len(group)
        prometheus.SPANS_STORED.inc(len(rows) - len(outcome.refused))
        if outcome.refused:
            prometheus.ingest_refused("database_refused", len(outcome.refused))
        results: list[list[tuple[dict[str, Any], str]] | BaseException] = []
        start = 0
        for item_rows, _ in group:
            end = start + len(item_rows)
            results.append(
                [(rows[i], why) for i, why in outcome.refused.items() if start <= i < end]
            )
            start = end
        return results

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, write what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
