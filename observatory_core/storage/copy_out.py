"""Export pages printed as CSV by the database itself, where the store can (`Store.copies_csv`:
PostgreSQL's COPY TO STDOUT), a few pages ahead of the writer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.engine import Engine

from observatory_core.storage.stores import store_for


def copy_csv_rows(engine: Engine, org_id: int, ids: list[int], fields: tuple[str, ...]) -> bytes:
    """The CSV lines (no header) of these spans, oldest first."""
    return store_for(engine).copy_csv_rows(engine, org_id, ids, fields)


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
