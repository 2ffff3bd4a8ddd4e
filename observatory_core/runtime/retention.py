"""The worker's retention run: delete what has expired (storage/retention.py) and write what
each org lost into its audit trail, which the Admin page shows (docs/operations.md,
"Retention"); with the ClickHouse span store, bring its stored spans' retention stamps to the
current settings and delete its rollup rows past their org's rollup retention (docs/scale.md,
"Retention on the span store")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from sqlalchemy.engine import Engine

from observatory_core.accounts.audit import record
from observatory_core.accounts.retention import org_stamp
from observatory_core.base.errors import UserError
from observatory_core.storage.retention import RunResult, expire, policies

ACTOR = "retention"  # the audit trail's "who" of a run


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
    past their org's rollup retention (`rollup_retention.py`). Nothing without
    `OBSERVATORY_SPAN_STORE`."""
    from observatory_core.storage.clickhouse import restamp
    from observatory_core.storage.clickhouse.current import span_store
    from observatory_core.storage.clickhouse.rollup_retention import expire_rollups

    try:
        store = span_store()
        if store is None:
            return Restamped()
        reason = restamp.failing(store)
        if reason is not None:  # the engine retries it, and it holds back every re-stamp
            return Restamped(
                "A mutation of the span store's spans or trace totals keeps failing, and "
                "holds back the retention re-stamps until it is killed "
                f"({restamp.kill_statement(store)}): {reason}",
                True,
            )
        with engine.connect() as conn:
            rules = policies(conn)
        stamps = restamp.stamps_of(rules.values())
        found = restamp.reconcile(store, stamps.values(), partial(org_stamp, engine))
        expired = expire_rollups(store, rules.values(), now or datetime.now(UTC))
    except UserError as exc:  # unreachable, held by another process, a bad setting
        return Restamped(f"The span store's retention stamps were not checked: {exc}", True)
    said = []
    if expired:
        said.append(
            f"Deleting {sum(expired.values()):,} rollup rows of {len(expired)} org(s) in the span "
            "store, past their org's rollup retention."
        )
    if found is None:
        said.insert(0, "An earlier re-stamp is still running in the span store; next run.")
    elif found:
        said.insert(
            0,
            f"Re-stamping {sum(found.values()):,} stored spans of {len(found)} org(s) in the "
            "span store with their current retention.",
        )
    return Restamped(" ".join(said) or None)
