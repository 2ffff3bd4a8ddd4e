"""Data loaded once and shared by a folder's tests: after each test the tables it changed are
put back as they were loaded, so the next test sees the same rows as if loaded again for it.

The span tables (`spans`, the rollups, `trace_totals`) are large and only read by the tests
that share them: they are checked by row count and span ids, not row by row (a test that wrote
or deleted spans, or another module's load in between, gets them loaded again). Every other
table is compared row by row and put back; a load is a function of the engine, and what it
returns (ids, keys) is `SharedData.loaded`.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from observatory_core.storage.schema import metadata, spans
from tests.helpers import empty_database, table_counts

SPAN_TABLES = frozenset(
    {"spans", "trace_totals"} | {t.name for t in metadata.sorted_tables if "rollup" in t.name}
)


def _span_ids(conn) -> int:
    """Which spans are stored: another load with as many spans has other ids."""
    return hash(tuple(conn.execute(select(spans.c.id, spans.c.trace_id, spans.c.span_id)).all()))


def _small_tables() -> list:
    return [t for t in metadata.sorted_tables if t.name not in SPAN_TABLES]


def _rows(conn, table) -> list[tuple]:
    return sorted(conn.execute(select(table)).all(), key=repr)


class SharedData:
    """The rows `load` writes into `db_url`'s database, loaded once and restored by `reset`."""

    def __init__(self, db_url: str, load: Callable[[Engine], object]) -> None:
        self.db_url, self._load = db_url, load
        self.loaded = None
        self._reload()

    def _reload(self) -> None:
        self.engine = empty_database(self.db_url)
        self.loaded = self._load(self.engine)
        with self.engine.connect() as conn:
            self._counts = table_counts(conn)
            self._span_ids = _span_ids(conn)
            self._small = {t.name: _rows(conn, t) for t in _small_tables()}

    def reset(self) -> None:
        """Put back what the last test changed (or load again if it changed spans, or if a
        changed table cannot be put back as it was: rows that point at it, or rows of other
        tables that its delete took with it)."""
        try:
            changed = self._put_back()
        except DBAPIError:
            changed = None
        if changed is None:
            self._reload()

    def _put_back(self) -> list | None:
        with self.engine.begin() as conn:
            counts = table_counts(conn)
            if any(counts[name] != self._counts[name] for name in SPAN_TABLES) or (
                _span_ids(conn) != self._span_ids
            ):
                changed = None
            else:
                changed = [
                    t
                    for t in metadata.sorted_tables
                    if t.name not in SPAN_TABLES
                    and (counts[t.name] != self._counts[t.name] or counts[t.name])
                    and _rows(conn, t) != self._small[t.name]
                ]
                for table in reversed(changed):
                    conn.execute(table.delete())
                for table in changed:
                    if self._small[table.name]:
                        keys = [c.name for c in table.columns]
                        conn.execute(
                            table.insert(),
                            [dict(zip(keys, r, strict=True)) for r in self._small[table.name]],
                        )
                # every foreign key cascades (or sets null) on delete: putting back a parent
                # table (orgs, users) empties or edits its children silently, spans too
                if changed and not self._as_loaded(conn):
                    changed = None
        return changed

    def _as_loaded(self, conn) -> bool:
        """Whether every table holds what the load left (span tables by count and ids)."""
        return (
            table_counts(conn) == self._counts
            and _span_ids(conn) == self._span_ids
            and all(_rows(conn, t) == self._small[t.name] for t in _small_tables())
        )


def shared(
    loads: dict, db_url: str, load: Callable[[Engine], object], name: str = ""
) -> SharedData:
    """`db_url`'s SharedData of `load` in `loads` (a module- or session-scoped dict), loaded
    the first time and put back as loaded every time after (`name` tells a module's loads
    apart: one in between another's is loaded again)."""
    if (db_url, name) in loads:
        loads[db_url, name].reset()
    else:
        loads[db_url, name] = SharedData(db_url, load)
    return loads[db_url, name]
