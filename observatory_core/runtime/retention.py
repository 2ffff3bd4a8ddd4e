"""The worker's retention run: delete what has expired (storage/retention.py) and write what
each org lost into its audit trail, which the Admin page shows (docs/operations.md,
"Retention"); with the ClickHouse span store, bring its stored spans' retention stamps to the
current settings, delete its spans, trace totals and rollup rows past their retention, and
write what each org lost there into its audit trail too (docs/span-store-internals.md,
"Retention")."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import select
from sqlalchemy.engine import Engine

from observatory_core.accounts.audit import record
from observatory_core.accounts.retention import org_stamp
from observatory_core.base.errors import UserError
from observatory_core.storage.retention import RunResult, expire, policies
from observatory_core.storage.schema import orgs

ACTOR = "retention"  # the audit trail's "who" of a run
log = logging.getLogger(__name__)


def run_and_record(engine: Engine, now: datetime | None = None, **limits) -> RunResult:
    """One run; every org that lost spans, traces or rollup rows gets one audit entry with
    the counts, the bytes handed back to the disk (the whole database's: orgs share its
    files) and how long the run took."""
    now = now or datetime.now(UTC)
    result = expire(engine, now, **limits)
    if result.skipped:
        return result
    touched = {o: c for o, c in result.orgs.items() if c.spans or c.traces or c.rollup_rows}
    with engine.begin() as conn:
        for org_id, counts in sorted(touched.items()):
            record(
                conn,
                org_id=org_id,
                actor=ACTOR,
                action="retention.run",
                target="expired data",
                at=now,
                spans=counts.spans,
                traces=counts.traces,
                rollup_rows=counts.rollup_rows,
                bytes_reclaimed=result.bytes_reclaimed,
                seconds=round(result.seconds, 3),
                partitions_dropped=result.partitions_dropped,
                complete=result.complete,
            )
    return result


@dataclass(frozen=True)
class Restamped:
    """What `restamp_span_store` did, as one sentence (None: nothing to say)."""

    said: str | None = None
    failed: bool = False


def restamp_span_store(engine: Engine, now: datetime | None = None) -> Restamped:
    """Re-stamp the span store's spans (and trace totals) whose retention days differ from
    their org's and project's settings: a change the store was unreachable for, or spans
    ingest stamped with settings read before a change; and delete its rollup and actor rows
    past their org's rollup retention (`rollup_retention.py`). The two run and are said each
    on its own: one failing or held back does not skip the other. The spans and trace totals
    past their stamps are deleted after the re-stamp (`span_expiry.py`), and each org that lost
    rows gets one audit entry with the counts, as `run_and_record` writes for the other stores.
    Nothing without `OBSERVATORY_SPAN_STORE`."""
    from observatory_core.storage.clickhouse.current import span_store

    try:
        store = span_store()
    except UserError as exc:  # unreachable, held by another process
        return Restamped(f"The span store's retention stamps were not checked: {exc}", True)
    if store is None:
        return Restamped()
    said: list[str] = []
    failed = False
    rules: dict | None = None
    now = now or datetime.now(UTC)
    run = _Run()

    def settings() -> dict:
        nonlocal rules
        if rules is None:
            with engine.connect() as conn:
                rules = policies(conn)
        return rules

    parts = (
        (_restamp, "retention stamps were not checked"),
        (_spans, "spans past their retention were not deleted"),
        (_rollups, "rollups past their retention were not deleted"),
    )
    for part, not_done in parts:
        try:
            line, bad = part(store, engine, settings, now, run)
        except UserError as exc:  # unreachable, held by another process, a bad setting
            line, bad = f"The span store's {not_done}: {exc}", True
        if line:
            said.append(line)
        failed = failed or bad
    _record_lost(engine, run.lost, now)
    return Restamped(" ".join(said) or None, failed)


@dataclass
class _Run:
    """What the parts of one span store run share: what each org lost, and whether the
    re-stamp found every stored stamp current (the spans' delete judges rows by them)."""

    lost: dict[int, Counter] = field(default_factory=dict)
    stamps_current: bool = False


def _record_lost(engine: Engine, lost: dict[int, Counter], now: datetime) -> None:
    """One entry per org that lost rows in the span store, its counts as the other stores';
    an org no longer in `DATABASE_URL` (its rows outlived it in the store) has no trail."""
    if not lost:
        return
    try:
        _write_lost(engine, lost, now)
    except Exception:  # the rows are gone already: their counts at least reach the log
        counts = {o: dict(c) for o, c in sorted(lost.items())}
        log.exception(
            "retention: the span store's deletes were not written to the trail: %s", counts
        )
        raise


def _write_lost(engine: Engine, lost: dict[int, Counter], now: datetime) -> None:
    with engine.begin() as conn:
        known = set(conn.execute(select(orgs.c.id).where(orgs.c.id.in_(list(lost)))).scalars())
        for org_id, counts in sorted(lost.items()):
            if org_id not in known:
                continue
            record(
                conn,
                org_id=org_id,
                actor=ACTOR,
                action="retention.run",
                target="span store",
                at=now,
                spans=counts["spans"],
                traces=counts["traces"],
                rollup_rows=counts["rollup_rows"],
                trace_totals_rows=counts["trace_rows"],
            )


def _restamp(store, engine: Engine, settings, now: datetime, run) -> tuple[str | None, bool]:
    """The spans' and trace totals' re-stamp, said as one sentence, and whether it failed."""
    from observatory_core.storage.clickhouse import restamp

    reason = restamp.failing(store)
    if reason is not None:  # the engine retries it, and it holds back every re-stamp
        return (
            "A mutation of the span store's spans or trace totals keeps failing, and "
            "holds back the retention re-stamps until it is killed "
            f"({restamp.kill_statement(store)}): {reason}",
            True,
        )
    stamps = restamp.stamps_of(settings().values())
    sent = restamp.reconcile(store, stamps.values(), partial(org_stamp, engine))
    if sent is None:
        return "An earlier re-stamp is still running in the span store; next run.", False
    if not sent:
        run.stamps_current = True
        return None, False
    said = [
        f"{sum(rows.values()):,} {what} of {len(rows)} org(s)"
        for rows, what in ((sent.spans, "stored spans"), (sent.trace_totals, "trace totals rows"))
        if rows
    ]
    return (
        f"Re-stamping {' and '.join(said)} in the span store with their current retention.",
        False,
    )


def _spans(store, engine: Engine, settings, now: datetime, run) -> tuple[str | None, bool]:
    """The spans and trace totals rows past their stamped retention deleted and counted into
    `lost`, said as one sentence."""
    from observatory_core.storage.clickhouse import span_expiry

    # only by stamps this run found current: a re-stamp held back (an unfinished or failing
    # mutation), sent this run, or not checked leaves stamps an admin's change has not reached
    if not run.stamps_current:  # said by the re-stamp
        return None, False
    told: dict[int, Counter] = {}  # this part's, for its sentence

    def deleted(expired: dict) -> None:  # kept in `run.lost` even if a later DELETE fails
        for org_id, e in expired.items():
            for counts in (
                run.lost.setdefault(org_id, Counter()),
                told.setdefault(org_id, Counter()),
            ):
                counts.update(spans=e.spans, traces=e.traces, trace_rows=e.trace_rows)

    span_expiry.expire_spans(store, now, deleted)
    if not told:
        return None, False
    spans = sum(c["spans"] for c in told.values())
    traces = sum(c["traces"] for c in told.values())
    return (
        f"Deleting {spans:,} spans and {traces:,} traces of {len(told)} org(s) in the span "
        "store, past their retention.",
        False,
    )


def _rollups(store, engine: Engine, settings, now: datetime, run) -> tuple[str | None, bool]:
    """The rollup and actor rows past their org's rollup retention deleted, said as one
    sentence (with a delete that keeps failing, its reason and how to kill it)."""
    from observatory_core.storage.clickhouse import rollup_retention

    said: list[str] = []
    reason = rollup_retention.failing(store)
    if reason is not None:  # its table's next deletes wait behind it; the others go on
        said.append(
            "A delete of the span store's rollups keeps failing, and holds back its table's "
            f"rollup retention until it is killed ({rollup_retention.kill(store)}): {reason}"
        )
    expired = rollup_retention.expire_rollups(store, settings().values(), now)
    for org_id, rows in expired.items():
        run.lost.setdefault(org_id, Counter()).update(rollup_rows=rows)
    if expired:
        said.append(
            f"Deleting {sum(expired.values()):,} rollup rows of {len(expired)} org(s) in the span "
            "store, past their org's rollup retention."
        )
    return " ".join(said) or None, reason is not None
