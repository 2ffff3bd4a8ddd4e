"""Fast, idempotent span writes: COPY on PostgreSQL, executemany on SQLite.

Both paths skip spans whose (org_id, trace_id, span_id) exists, so a re-sent batch never
duplicates, and each batch commits on its own so progress is never lost to a later failure.
The rollups take each batch's new spans in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from observatory_core.ingest.spanrows import SPAN_COLUMNS
from observatory_core.rollups.maintain import fold_new_spans, prepare_new_spans, spans_new
from observatory_core.rollups.partials import SOURCE_COLUMNS
from observatory_core.storage.dialect import insert_ignoring_duplicates, serialize_rollup_writes
from observatory_core.storage.schema import spans

_JSON_COLUMNS = {"tags", "metadata", "attributes"}


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _copy_postgres(conn: Connection, batch: list[dict[str, Any]]) -> int:
    cols = ", ".join(f'"{c}"' for c in SPAN_COLUMNS)
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        # Once per connection: the span columns without id or constraints, emptied on commit.
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS spans_staging ON COMMIT DELETE ROWS AS "
            f"SELECT {cols} FROM spans WITH NO DATA"
        )
        with cur.copy(f"COPY spans_staging ({cols}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row(
                    [json.dumps(row[c]) if c in _JSON_COLUMNS else row[c] for c in SPAN_COLUMNS]
                )
    prepare_new_spans(conn)
    new_cols = ", ".join(SOURCE_COLUMNS)
    with raw.cursor() as cur:
        # Only the spans really inserted (not re-sent ones) go on to the rollups.
        cur.execute(
            f"WITH ins AS (INSERT INTO spans ({cols}) SELECT {cols} FROM spans_staging "
            f"ON CONFLICT (org_id, trace_id, span_id) DO NOTHING RETURNING {new_cols}) "
            f"INSERT INTO spans_new ({new_cols}) SELECT {new_cols} FROM ins"
        )
        return cur.rowcount


def _insert_sqlite(conn: Connection, batch: list[dict[str, Any]]) -> int:
    ids = [
        row[0]
        for row in conn.execute(
            insert_ignoring_duplicates(conn, spans).returning(spans.c.id), batch
        )
    ]
    prepare_new_spans(conn)
    if ids:
        # This transaction holds SQLite's write lock, so its new ids form one unbroken range.
        source = select(*(spans.c[c] for c in SOURCE_COLUMNS)).where(
            spans.c.id.between(min(ids), max(ids))
        )
        conn.execute(spans_new.insert().from_select(list(SOURCE_COLUMNS), source))
    return len(ids)


def write_spans(
    engine: Engine,
    rows: Iterable[dict[str, Any]],
    *,
    batch_size: int = 5000,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Write complete span rows (see `spanrows.complete_row`); returns how many were new.

    `on_batch(seen, written)` is called after each committed batch, for progress bars.
    """
    write = _copy_postgres if engine.dialect.name == "postgresql" else _insert_sqlite
    written = 0
    for batch in _batches(rows, batch_size):
        with engine.begin() as conn:
            new = write(conn, batch)
            if new:
                serialize_rollup_writes(conn)
                fold_new_spans(conn)
        written += new
        if on_batch:
            on_batch(len(batch), new)
    return written
