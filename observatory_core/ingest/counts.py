"""Per org and minute: spans the receiver rejected (with the batch's accepted ones), which
the 'ingestion rejecting spans' system rule watches."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from observatory_core.storage.dialect import upsert
from observatory_core.storage.schema import ingest_counts


def record_rejections(
    engine: Engine, org_id: int, accepted: int, rejected: int, now: datetime | None = None
) -> None:
    minute = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    with engine.begin() as conn:
        stmt = upsert(conn, ingest_counts).values(
            org_id=org_id, bucket_start=minute, accepted=accepted, rejected=rejected
        )
        c = ingest_counts.c
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[c.org_id, c.bucket_start],
                set_={
                    "accepted": c.accepted + stmt.excluded.accepted,
                    "rejected": c.rejected + stmt.excluded.rejected,
                },
            )
        )
