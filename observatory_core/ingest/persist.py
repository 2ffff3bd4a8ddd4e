"""The span write path: store spans and fold the new ones into the rollups, together.

Every writer (the OTLP group-commit writer, the demo loader, file import) goes through
`write_spans`, the one place that decides where spans go: with `OBSERVATORY_SPAN_STORE` set,
into the ClickHouse span store (`ingest/to_clickhouse.py`; its views keep the rollups and trace
totals); otherwise, per batch, storage inserts the spans (`storage/bulk.py`) and, in the same
transaction, the new ones are folded into the rollups, the actor rollups and `trace_totals`
(`rollups/maintain.py`), so figures and spans commit together. Orgs, keys, projects and the
ingest bookkeeping stay in `DATABASE_URL` either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine

from observatory_core.ingest import dedup, llm_calls, to_clickhouse
from observatory_core.rollups.dimensions import extract_new
from observatory_core.rollups.maintain import fold_new_spans
from observatory_core.rollups.partials import SOURCE_COLUMNS
from observatory_core.rollups.refold import refold
from observatory_core.storage import bulk
from observatory_core.storage.clickhouse.current import span_store
from observatory_core.storage.dialect import serialize_rollup_writes


class _FoldIntoRollups:
    """`bulk.write_spans`'s `then`: settle which span of a call sent twice counts
    (`ingest/dedup.py`) and which new spans are LLM calls (`ingest/llm_calls.py`), fold the
    batch's new spans into every rollup, then refold the stored spans those decisions changed
    (a twin that stopped counting, a wrapper above a late child)."""

    columns = (*SOURCE_COLUMNS, "span_id")

    def __call__(self, conn: Connection, new: Table) -> None:
        serialize_rollup_writes(conn)  # concurrent writers take turns for the fold
        dedup.leave_out_sent_twins(conn, new)  # set aside by their sender: never counted
        touched = dedup.settle(conn, new, datetime.now(UTC))
        llm_calls.settle_new(conn, new)
        extract_new(conn, new)  # the org's declared dimensions (issue 19)
        fold_new_spans(conn, new)
        # stored spans that stopped counting (or took their twin's model): their buckets anew
        refold(conn, ((t.org_id, t.trace_id, t.start_time) for t in touched))
        llm_calls.settle_stored(conn, new)


FOLD = _FoldIntoRollups()


def write_spans(
    engine: Engine,
    rows: Iterable[dict[str, Any]],
    *,
    batch_size: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    each_once: bool = False,
) -> int:
    """Write complete span rows (see `spanrows.complete_row`) and fold the new ones into the
    rollups, one transaction per batch (5,000 rows by default; 50,000 into ClickHouse, which
    wants few large inserts); returns how many were new. `engine` is `DATABASE_URL`.

    `on_batch(seen, written)` is called after each committed batch, for progress bars.
    `each_once`: the input holds each span once (the demo's); the span store then skips the
    stored-span look-up while it holds of the orgs only this write's spans (SQL stores: unused).
    """
    store = span_store()
    if store is not None:
        return to_clickhouse.write_spans(
            store,
            engine,
            rows,
            batch_size=batch_size or to_clickhouse.BATCH,
            on_batch=on_batch,
            each_once=each_once,
        )
    batch_size = batch_size or 5000
    return bulk.write_spans(engine, rows, batch_size=batch_size, on_batch=on_batch, then=FOLD)
