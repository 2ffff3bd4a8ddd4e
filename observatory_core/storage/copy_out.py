"""PostgreSQL's COPY TO STDOUT for export pages: the database writes the CSV itself.

Each column is printed by an expression that matches `exports.writers.csv_text` exactly, so
a CSV file reads the same whichever path wrote it. Only integers (org and span ids) enter
the COPY statement; the filter was applied when the ids were chosen, with bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import JSON, Boolean, Float, Integer
from sqlalchemy.engine import Engine

from observatory_core.storage.schema import spans
from observatory_core.storage.types import UtcDateTime


def _csv_expression(field: str) -> str:
    column = spans.c[field]
    name = f'"{field}"'
    kind = column.type
    if isinstance(kind, UtcDateTime):
        return f"""to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
    if isinstance(kind, Boolean | Float | JSON):
        return f"{name}::text"  # true/false; shortest round-trip floats; compact JSON
    if isinstance(kind, Integer):
        return name
    return f"NULLIF({name}, '')"


def copy_csv_rows(engine: Engine, org_id: int, ids: list[int], fields: tuple[str, ...]) -> bytes:
    """The CSV lines (no header) of these spans, oldest first."""
    if not ids:
        return b""
    if not all(isinstance(i, int) for i in ids) or not isinstance(org_id, int):
        raise TypeError("COPY pages take integer ids only")
    columns = ", ".join(_csv_expression(f) for f in fields)
    id_list = ",".join(map(str, ids))
    sql = (
        f"COPY (SELECT {columns} FROM spans WHERE org_id = {org_id} "
        f"AND id = ANY('{{{id_list}}}'::bigint[]) ORDER BY start_time, id) TO STDOUT (FORMAT csv)"
    )
    out = bytearray()
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(sql) as copy:
            for chunk in copy:
                out += chunk
    return bytes(out)


def copy_ahead(
    engine: Engine, org_id: int, pages: Iterable[list[int]], fields: tuple[str, ...], ahead: int
) -> Iterator[tuple[list[int], bytes]]:
    """(ids, CSV lines) per page, in order, with up to `ahead` COPYs running on their own
    connections meanwhile: the database formats the next pages while this one is written,
    which uses a second core. Pages not yet taken when the caller stops are dropped."""
    queue: list[tuple[list[int], Future]] = []
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="export-copy") as pool:
        try:
            for ids in pages:
                queue.append((ids, pool.submit(copy_csv_rows, engine, org_id, ids, fields)))
                if len(queue) > ahead:
                    ids, done = queue.pop(0)
                    yield ids, done.result()
            while queue:
                ids, done = queue.pop(0)
                yield ids, done.result()
        finally:
            for _, pending in queue:
                pending.cancel()
