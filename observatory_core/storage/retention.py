"""Deleting expired spans and rollups, a whole trace at a time (docs/operations.md, "Retention").

A trace expires when its last span started before its project's cutoff (the project's
retention, else its org's); its spans and its `trace_totals` rows go in one transaction, so
trace totals, exports and alerts see a trace whole or not at all. Work is cut into batches of
a few hundred traces, each its own short transaction, so ingest and readers wait at most one
batch. Rollups are kept for the org's (longer) rollup retention, so old months still chart.

On PostgreSQL spans are partitioned by month (migration 0017): a month whose every org and
project has expired it, and whose traces all lie inside it, is dropped whole, which returns
its space at once; months are created ahead of time. SQLite deletes in batches and returns the
freed pages to the file system with an incremental vacuum (`Store.reclaim_space`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import and_, delete, exists, false, func, not_, or_, select, true
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement

from observatory_core.storage.schema import (
    ACTOR_ROLLUPS,
    ROLLUPS,
    orgs,
    projects,
    spans,
    trace_totals,
)
from observatory_core.storage.stores import store_for
from observatory_core.storage.stores.base import PartitionBusy, SpanPartition, month_start
from observatory_core.storage.transient import is_transient

T = TypeVar("T")
RETENTION_LOCK = 7_411_017  # one retention run at a time across worker processes
ATTEMPTS = 5  # a batch that lost a race (SQLite busy past its timeout, a deadlock) is retried
MONTHS_AHEAD = 2  # partitions kept ready past the current month
# how far one DELETE of rollup rows reaches, per table: a day of minutes is ~1,440 rows per
# key combination
ROLLUP_STEP = {
    "rollup_1min": timedelta(days=1),
    "rollup_1hour": timedelta(days=7),
    "rollup_1day": timedelta(days=92),
}


@dataclass(frozen=True)
class Policy:
    """One org's retention: days spans and rollups are kept (None: forever), and the projects
    that override the span retention."""

    org_id: int
    span_days: int | None
    rollup_days: int | None
    project_days: dict[int, int] = field(default_factory=dict)

    def span_groups(self, now: datetime) -> list[tuple[list[int] | None, datetime | None]]:
        """(projects, cutoff) pairs: the listed projects, or with None every project not
        listed elsewhere; cutoff None keeps them forever."""
        by_days: dict[int, list[int]] = defaultdict(list)
        for project, days in self.project_days.items():
            by_days[days].append(project)
        groups: list[tuple[list[int] | None, datetime | None]] = [
            (sorted(ps), now - timedelta(days=d)) for d, ps in sorted(by_days.items())
        ]
        others = None if self.span_days is None else now - timedelta(days=self.span_days)
        groups.append((None, others))
        return groups

    def cutoff(self, project_id: int, now: datetime) -> datetime | None:
        days = self.project_days.get(project_id, self.span_days)
        return None if days is None else now - timedelta(days=days)


@dataclass
class OrgCounts:
    spans: int = 0
    traces: int = 0
    rollup_rows: int = 0


@dataclass
class RunResult:
    """What one run deleted, per org, and what it did to the storage."""

    orgs: dict[int, OrgCounts] = field(default_factory=lambda: defaultdict(OrgCounts))
    partitions_created: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    partitions_busy: list[str] = field(default_factory=list)
    bytes_reclaimed: int = 0
    seconds: float = 0.0
    complete: bool = True  # False: stopped at the run's batch limit; the next run goes on
    skipped: bool = False  # another process was running retention

    @property
    def spans(self) -> int:
        return sum(c.spans for c in self.orgs.values())


def policies(conn: Connection) -> dict[int, Policy]:
    """Every org's retention (orgs with none set included: they keep everything)."""
    overrides: dict[int, dict[int, int]] = defaultdict(dict)
    for org_id, project_id, days in conn.execute(
        select(projects.c.org_id, projects.c.id, projects.c.span_retention_days).where(
            projects.c.span_retention_days.is_not(None)
        )
    ):
        overrides[org_id][project_id] = days
    return {
        org_id: Policy(org_id, span_days, rollup_days, overrides.get(org_id, {}))
        for org_id, span_days, rollup_days in conn.execute(
            select(orgs.c.id, orgs.c.span_retention_days, orgs.c.rollup_retention_days)
        )
    }


def _in_group(column, projects_: list[int] | None, listed: list[int]) -> ColumnElement[bool]:
    if projects_ is not None:
        return column.in_(projects_)
    return column.not_in(listed) if listed else true()


def _expired(t, policy: Policy, now: datetime) -> ColumnElement[bool]:
    """Rows of `trace_totals` (or an alias) whose trace has expired in its project."""
    listed = list(policy.project_days)
    parts = [
        and_(_in_group(t.c.project_id, ps, listed), t.c.last_start < cutoff)
        for ps, cutoff in policy.span_groups(now)
        if cutoff is not None
    ]
    return or_(*parts) if parts else false()


def _expired_traces(conn: Connection, policy: Policy, now: datetime, limit: int) -> list:
    """Up to `limit` expired traces of the org: (trace_id, first start, last start). A trace in
    several projects expires when it has in all of them."""
    t, other = trace_totals, trace_totals.alias("other")
    alive_elsewhere = and_(
        t.c.shared,
        exists().where(
            other.c.org_id == t.c.org_id,
            other.c.trace_id == t.c.trace_id,
            not_(_expired(other, policy, now)),
        ),
    )
    # Oldest first, along the (org, last start) index: a batch's traces lie close in time, so
    # deleting their spans reads a short stretch of the span indexes (and on PostgreSQL one or
    # two months). A trace in several projects is merged here; rows past the limit join the
    # next batch, and spans they leave behind expire as spans of no trace.
    query = (
        select(t.c.trace_id, t.c.first_start, t.c.last_start)
        .where(t.c.org_id == policy.org_id, _expired(t, policy, now), not_(alive_elsewhere))
        .order_by(t.c.last_start)
        .limit(limit)
    )
    merged: dict[str, tuple] = {}
    for trace_id, first, last in conn.execute(query):
        was = merged.get(trace_id)
        if was:  # first_start may be NULL on rows from before migration 0008
            first = min((v for v in (first, was[1]) if v is not None), default=None)
            last = max(last, was[2])
        merged[trace_id] = (trace_id, first, last)
    return list(merged.values())


def delete_traces(conn: Connection, org_id: int, batch: list) -> tuple[int, int]:
    """Delete these traces' spans and trace_totals rows in the caller's transaction;
    `batch` rows are (trace_id, first start, last start). Answers (spans, traces)."""
    ids = [row[0] for row in batch]
    lo = min((row[1] for row in batch if row[1] is not None), default=None)
    hi = max((row[2] for row in batch if row[2] is not None), default=None)
    where = [spans.c.org_id == org_id, spans.c.trace_id.in_(ids)]
    if lo is not None and hi is not None:  # lets PostgreSQL read only the months involved
        where += [spans.c.start_time >= lo, spans.c.start_time <= hi]
    removed = conn.execute(delete(spans).where(*where)).rowcount
    conn.execute(
        delete(trace_totals).where(
            trace_totals.c.org_id == org_id, trace_totals.c.trace_id.in_(ids)
        )
    )
    return removed, len(ids)


def _orphans(conn: Connection, policy: Policy, now: datetime, limit: int) -> int:
    """Expired spans no trace_totals row stands for (a trace of duplicates only), deleted up
    to `limit`; they are in no trace total, so they can go one by one."""
    listed = list(policy.project_days)
    removed = 0
    for ps, cutoff in policy.span_groups(now):
        if cutoff is None:
            continue
        t = trace_totals
        ids = list(
            conn.execute(
                select(spans.c.id)
                .where(
                    spans.c.org_id == policy.org_id,
                    _in_group(spans.c.project_id, ps, listed),
                    spans.c.start_time < cutoff,
                    ~exists().where(t.c.org_id == spans.c.org_id, t.c.trace_id == spans.c.trace_id),
                )
                .limit(limit - removed)
            ).scalars()
        )
        if ids:
            removed += conn.execute(
                delete(spans).where(spans.c.id.in_(ids), spans.c.start_time < cutoff)
            ).rowcount
        if removed >= limit:
            break
    return removed


def _expire_rollups(engine: Engine, policy: Policy, now: datetime) -> int:
    """Rollup rows older than the org's rollup retention, a bounded stretch per DELETE."""
    if policy.rollup_days is None:
        return 0
    cutoff = now - timedelta(days=policy.rollup_days)
    removed = 0
    for table in (*ROLLUPS.values(), *ACTOR_ROLLUPS.values()):
        step = ROLLUP_STEP.get(table.name, timedelta(days=7))

        def one_step(conn: Connection, table=table, step=step) -> int | None:
            oldest = conn.execute(
                select(func.min(table.c.bucket_start)).where(table.c.org_id == policy.org_id)
            ).scalar()
            if oldest is None or oldest >= cutoff:
                return None
            return conn.execute(
                delete(table).where(
                    table.c.org_id == policy.org_id,
                    table.c.bucket_start < min(cutoff, oldest + step),
                )
            ).rowcount

        while (n := in_batch(engine, one_step)) is not None:
            removed += n
    return removed


def in_batch(engine: Engine, work: Callable[[Connection], T]) -> T:
    """`work` in a transaction of its own, retried with a growing pause when it lost a race for
    the database (a busy SQLite file under steady ingest, a deadlock): one batch, never a run,
    is what a retry repeats."""
    for attempt in range(ATTEMPTS):
        try:
            with engine.begin() as conn:
                return work(conn)
        except Exception as exc:
            if attempt == ATTEMPTS - 1 or not is_transient(exc):
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _months(start: datetime, count: int) -> Iterator[datetime]:
    month = month_start(start)
    for _ in range(count):
        yield month
        month = month_start(month + timedelta(days=32))


def ensure_partitions(engine: Engine, now: datetime, result: RunResult) -> None:
    """The current month's span partition and `MONTHS_AHEAD` more exist (PostgreSQL)."""
    store = store_for(engine)
    with engine.connect() as conn:
        existing = store.span_partitions(conn)
    if existing is None:
        return
    have = {p.start for p in existing}
    for month in _months(now, MONTHS_AHEAD + 1):
        if month in have:
            continue
        try:
            with engine.begin() as conn:
                result.partitions_created.append(store.create_span_partition(conn, month))
        except PartitionBusy:
            result.partitions_busy.append(str(month.date()))


def _droppable(conn: Connection, part: SpanPartition, rules: dict[int, Policy], now: datetime):
    """Whether every org and project with spans in `part` has expired the whole month, and
    the traces reaching across its bounds (which must go first) when all have expired; None
    when the month must stay."""
    for policy in rules.values():
        listed = list(policy.project_days)
        for ps, cutoff in policy.span_groups(now):
            if cutoff is not None and cutoff >= part.end:
                continue
            held = conn.execute(
                select(
                    exists().where(
                        spans.c.org_id == policy.org_id,
                        _in_group(spans.c.project_id, ps, listed),
                        spans.c.start_time >= part.start,
                        spans.c.start_time < part.end,
                    )
                )
            ).scalar()
            if held:
                return None
    t = trace_totals
    crossing = list(
        conn.execute(
            select(t.c.org_id, t.c.trace_id).where(
                or_(
                    and_(t.c.first_start < part.start, t.c.last_start >= part.start),
                    and_(t.c.first_start < part.end, t.c.last_start >= part.end),
                )
            )
        )
    )
    by_org: dict[int, set[str]] = defaultdict(set)
    for org_id, trace_id in crossing:
        by_org[org_id].add(trace_id)
    out = {}
    for org_id, traces in by_org.items():
        rows = conn.execute(
            select(t.c.project_id, t.c.trace_id, t.c.first_start, t.c.last_start).where(
                t.c.org_id == org_id, t.c.trace_id.in_(sorted(traces))
            )
        ).all()
        policy = rules.get(org_id)
        spans_of: dict[str, list] = defaultdict(list)
        for project_id, trace_id, first, last in rows:
            cutoff = policy.cutoff(project_id, now) if policy else None
            if cutoff is None or last >= cutoff:
                return None  # a live trace has spans in this month: it stays for now
            spans_of[trace_id].append((first, last))
        out[org_id] = [
            (trace_id, min(f for f, _ in v), max(last for _, last in v))
            for trace_id, v in spans_of.items()
        ]
    return out


def _drop_partitions(engine: Engine, rules: dict[int, Policy], now: datetime, result: RunResult):
    store = store_for(engine)
    with engine.connect() as conn:
        existing = store.span_partitions(conn)
    for part in existing or []:
        if part.end > month_start(now):
            break
        with engine.connect() as conn:
            crossing = _droppable(conn, part, rules, now)
        if crossing is None:
            continue
        for org_id, batch in crossing.items():
            n_spans, n_traces = in_batch(
                engine, lambda conn, o=org_id, b=batch: delete_traces(conn, o, b)
            )
            result.orgs[org_id].spans += n_spans
            result.orgs[org_id].traces += n_traces
        t = trace_totals
        inside = [t.c.first_start >= part.start, t.c.last_start < part.end]
        try:
            with engine.begin() as conn:
                per_org_traces = dict(
                    conn.execute(
                        select(t.c.org_id, func.count()).where(*inside).group_by(t.c.org_id)
                    ).all()
                )
                per_org_spans = dict(
                    conn.execute(
                        select(spans.c.org_id, func.count())
                        .where(spans.c.start_time >= part.start, spans.c.start_time < part.end)
                        .group_by(spans.c.org_id)
                    ).all()
                )
                conn.execute(delete(t).where(*inside))
                result.bytes_reclaimed += store.drop_span_partition(conn, part)
        except PartitionBusy:
            result.partitions_busy.append(part.name)
            continue
        result.partitions_dropped.append(part.name)
        for org_id, n in per_org_spans.items():
            result.orgs[org_id].spans += n
        for org_id, n in per_org_traces.items():
            result.orgs[org_id].traces += n


def expire(
    engine: Engine,
    now: datetime | None = None,
    *,
    batch_traces: int = 500,
    max_batches: int = 200,
    pause_s: float = 0.02,
) -> RunResult:
    """One retention run: create partitions ahead, drop months expired everywhere, then delete
    expired traces (and spans of no trace), and rollups, in batches of `batch_traces` traces,
    at most `max_batches` per org (the next run goes on), `pause_s` between two batches so
    writers waiting on the database go first; then hand freed space back."""
    began = time.monotonic()
    now = now or datetime.now(UTC)
    store = store_for(engine)
    result = RunResult()
    with engine.connect() as lock:
        if not store.try_lock(lock, RETENTION_LOCK):
            result.skipped = True
            return result
        lock.commit()
        try:
            ensure_partitions(engine, now, result)
            with engine.connect() as conn:
                rules = policies(conn)
            _drop_partitions(engine, rules, now, result)
            for policy in rules.values():
                _expire_org(engine, policy, now, result, batch_traces, max_batches, pause_s)
            result.bytes_reclaimed += store.reclaim_space(engine)
        finally:
            store.unlock(lock, RETENTION_LOCK)
            lock.commit()
    result.seconds = time.monotonic() - began
    return result


def _expire_org(
    engine: Engine,
    policy: Policy,
    now: datetime,
    result: RunResult,
    batch_traces: int,
    max_batches: int,
    pause_s: float,
) -> None:
    counts = result.orgs[policy.org_id] if policy.span_days or policy.project_days else None

    def one_batch(conn: Connection) -> tuple[int, int] | None:
        batch = _expired_traces(conn, policy, now, batch_traces)
        return delete_traces(conn, policy.org_id, batch) if batch else None

    for _ in range(max_batches if counts is not None else 0):
        done = in_batch(engine, one_batch)
        if done is None:
            break
        n_spans, n_traces = done
        counts.spans += n_spans
        counts.traces += n_traces
        if pause_s:
            time.sleep(pause_s)
    else:
        if counts is not None:
            result.complete = False
            return
    if counts is not None:
        for _ in range(max_batches):
            n = in_batch(engine, lambda conn: _orphans(conn, policy, now, batch_traces * 5))
            counts.spans += n
            if n < batch_traces * 5:
                break
    removed = _expire_rollups(engine, policy, now)
    if removed:
        result.orgs[policy.org_id].rollup_rows += removed
