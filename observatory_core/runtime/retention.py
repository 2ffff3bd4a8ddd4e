"""The worker's retention run: delete what has expired (storage/retention.py) and write what
each org lost into its audit trail, which the Admin page shows (docs/operations.md,
"Retention")."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from observatory_core.accounts.audit import record
from observatory_core.storage.retention import RunResult, expire

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
