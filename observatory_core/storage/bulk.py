"""Fast, idempotent span writes: one transaction per batch, through the store's bulk path
(`Store.insert_spans`: COPY on PostgreSQL, executemany on SQLite).

Every path skips spans whose (org_id, trace_id, span_id) exists, so a re-sent batch never
duplicates, and each batch commits on its own so progress is never lost to a later failure.
Storage knows nothing of what is derived from spans: a caller that keeps derived tables (the
ingest write path folds rollups, `ingest/persist.py`) passes `then`, which sees the batch's
new spans in a temporary table inside the same transaction.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from itertools import islice
from typing import Any, Protocol

from sqlalchemy import Column, MetaData, Table
from sqlalchemy.engine import Connection, Engine

from observatory_core.storage.schema import DIMENSION_SLOTS, spans
from observatory_core.storage.stores import store_for

# The columns of a complete span row: every column but the generated id.
# What a writer sends: the declared dimensions' slots are filled in the batch's transaction
# from the org's declarations (`rollups/dimensions.py`), never by the row.
SPAN_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in spans.columns if c.name != "id" and c.name not in DIMENSION_SLOTS
)


class AfterBatch(Protocol):
    """What to do with a batch's new spans before it commits."""

    columns: tuple[str, ...]  # the columns of the new spans it reads

    def __call__(self, conn: Connection, new: Table) -> None: ...


@lru_cache(maxsize=8)
def new_spans_table(columns: tuple[str, ...]) -> Table:
    """The temporary table of a batch's new spans, with these columns of `spans`. Its name
    carries the columns' digest: a temporary table lives as long as its (pooled) connection,
    so another column set must not find one made for the first."""
    digest = zlib.crc32(",".join(columns).encode())
    return Table(
        f"spans_new_{digest:08x}",
        MetaData(),
        *(Column(name, spans.c[name].type) for name in columns),
        prefixes=["TEMPORARY"],
    )


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def write_spans(
    engine: Engine,
    rows: Iterable[dict[str, Any]],
    *,
    batch_size: int = 5000,
    on_batch: Callable[[int, int], None] | None = None,
    then: AfterBatch | None = None,
) -> int:
    """Write complete span rows (see `spanrows.complete_row`); returns how many were new.

    `then(conn, new)` runs in each batch's transaction when the batch added spans, `new`
    holding them (`then.columns` of each). `on_batch(seen, written)` is called after each
    committed batch, for progress bars.
    """
    store = store_for(engine)
    new = new_spans_table(then.columns) if then is not None else None
    written = 0
    for batch in _batches(rows, batch_size):
        with engine.begin() as conn:
            count = store.insert_spans(conn, batch, SPAN_COLUMNS, new)
            if count and then is not None:
                then(conn, new)
        written += count
        if on_batch:
            on_batch(len(batch), count)
    return written
