"""The span store as an SQLAlchemy engine, so the query builders (`filters/compile.py`,
`traces/query.py`) run on it unchanged: clickhouse-connect's dialect over the store's own
client, whatever the target (a chDB folder or a server).

The engine's connections share `SpanStore.client`, so on chDB every statement still takes the
folder's turn within the caller's time budget (`connect._Turns`); each SELECT carries the same
bounds as the hand-written reads (`reads.py`: the engine stops it at the budget, 2 GB of
memory), and on a cluster runs its subqueries over every shard (`cluster.READ_SETTINGS`);
times are bound with their microseconds (the driver's own binding drops them).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from observatory_core.base.errors import QueryTooLarge, QueryTooSlow
from observatory_core.storage import budget

if TYPE_CHECKING:
    from observatory_core.storage.clickhouse.connect import SpanStore


def _connection_class():
    from clickhouse_connect.dbapi.connection import Connection

    class SharedClient(Connection):
        """A DB-API connection over an open client: closing it leaves the client open (the
        store closes it)."""

        def __init__(self, client: Any) -> None:  # no super(): the client exists already
            self.client = client
            self.timezone = None

        def close(self) -> None:
            return None

    return SharedClient


def open_engine(store: SpanStore) -> Engine:
    """An engine whose statements run on `store`'s client and name its database's tables."""
    shared = _connection_class()
    engine = create_engine("clickhousedb://", creator=lambda: shared(store.client))
    engine.dialect.observatory_database = store.database  # read by stores/clickhouse.py
    engine.dialect.observatory_cluster = store.naming.cluster  # read by `_before`
    engine.dialect.observatory_in_process = store.target.in_process  # read by `_before`
    engine.dialect.statement_compiler = _compiler_class(engine.dialect.statement_compiler)
    # JSON columns: tags are a native array here, metadata and attributes JSON text
    engine.dialect._json_deserializer = _json_value
    budget.install(engine)
    return engine


def _compiler_class(base: type) -> type:
    class Compiler(base):
        def limit_clause(self, select, **kw) -> str:
            """An OFFSET without a LIMIT as `OFFSET n` alone: SQLAlchemy writes `LIMIT -1
            OFFSET n`, which this engine reads as "the last row" (the rollup path's raw edges,
            a subquery kept whole by OFFSET 0, counted one span of each)."""
            text = super().limit_clause(select, **kw)
            if select._limit_clause is None and select._offset_clause is not None:
                text = text.replace("\n LIMIT -1 OFFSET ", "\n OFFSET ")
            return text

    return Compiler


def _json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _instant_class():
    from clickhouse_connect.driver.binding import DT64Param

    class Instant(DT64Param):
        """A time as a typed `DateTime64(6, 'UTC')` value, not a string: a string with
        microseconds cannot be compared with a `DateTime` column (the rollups' `bucket_start`)."""

        def format(self, tz, top_level: bool) -> str:
            text = super().format(tz, top_level)
            return text if top_level else f"toDateTime64({text}, 6, 'UTC')"

    return Instant


_INSTANT: list = []


def _bound(value: Any) -> Any:
    if isinstance(value, datetime):
        # with microseconds, written in UTC whatever the process's or server's zone (the
        # driver would write it in its `server_tz`, and the UTC column read it as UTC)
        if not _INSTANT:
            _INSTANT.append(_instant_class())
        return _INSTANT[0](value, tz=UTC)
    if isinstance(value, list | tuple):
        return type(value)(_bound(v) for v in value)
    return value


_MARK = " SETTINGS max_execution_time = "


def _bounds(seconds: float | None, cluster: str | None = None) -> str:
    from observatory_core.storage.clickhouse.cluster import READ_SETTINGS
    from observatory_core.storage.clickhouse.connect import READ_SECONDS
    from observatory_core.storage.clickhouse.reads import READ_MEMORY

    limit = READ_SECONDS if seconds is None else max(1, int(seconds + 0.999))
    # on a cluster: subqueries over the Distributed tables run over every shard
    more = "".join(f", {k} = '{v}'" for k, v in READ_SETTINGS.items()) if cluster else ""
    return (
        f"{_MARK}{limit}, timeout_overflow_mode = 'throw', "
        f"max_memory_usage = {READ_MEMORY}, max_bytes_before_external_group_by = "
        f"{READ_MEMORY // 2}, max_bytes_before_external_sort = {READ_MEMORY // 2}{more}"
    )


def _before(conn, cursor, statement, parameters, context, executemany):
    import time

    limit = budget.limit_for(context)
    left = None
    if limit is not None:
        left = limit[0] - time.monotonic()
        if left <= 0:
            budget.raise_spent(limit[1])
    reads = statement.lstrip()[:6].upper().startswith(("SELECT", "WITH"))
    if reads and _MARK not in statement:  # not a statement run again as it was sent
        cluster = getattr(conn.dialect, "observatory_cluster", None)
        statement = statement.rstrip().rstrip(";") + _bounds(left, cluster)
        if _one_thread(conn, context):
            statement += ", max_threads = 1"
        if _asked(context, "block_cache") and getattr(
            conn.dialect, "observatory_in_process", False
        ):
            statement += ", use_uncompressed_cache = 1"
    if isinstance(parameters, dict):
        parameters = {k: _bound(v) for k, v in parameters.items()}
    return statement, parameters


def _asked(context, option: str) -> bool:
    """Whether the statement carries the execution option `option`. `block_cache`: read through
    the engine's cache of decompressed blocks (`connect.CHDB_OPTIONS`), for the traces by a tree
    total, which read the org's trace totals and the window's granules at every request (at 1M,
    the page's CPU 85-89 -> 63-73 ms median, docs/span-store-internals.md); not
    every read (a read's cached blocks count against its memory bound, `reads.READ_MEMORY`,
    which an export of long prompts then passed)."""
    return context is not None and bool(context.execution_options.get(option, False))


def _one_thread(conn, context) -> bool:
    """Whether the statement asked to run on one thread (execution option `one_thread`) and the
    engine is chDB, in this process: the tree totals' ranking spent about a quarter more CPU
    split over two threads, for no shorter wait (docs/span-store-internals.md, "Traces mode")."""
    asked = context is not None and context.execution_options.get("one_thread", False)
    return bool(asked) and getattr(conn.dialect, "observatory_in_process", False)


def install_budget(engine: Engine) -> None:
    """Every SELECT bounded in time (the budget left, else `READ_SECONDS`) and memory."""
    event.listen(engine, "before_cursor_execute", _before, retval=True)


def read_columns(engine: Engine, query, formats: dict[str, str] | None = None) -> list[list]:
    """`query`'s answer as one list per column, read through the store's client: the driver
    makes each column from the engine's blocks, where a read through SQLAlchemy made a tuple
    and a row object per row (an export's reads of 100,000 CSV lines). The same statement as
    `engine` sends (the same SQL, bounds and bound times, `_before`) and the same errors: a
    read past its memory bound raises `QueryTooLarge`, past its time budget `QueryTooSlow`.
    `formats`: the driver's read format per column name (`"bytes"` for text not decoded).
    The values are the driver's, without SQLAlchemy's result types (a time comes naive);
    an answer of no rows is still one (empty) list per column."""
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    params = dict(compiled.params)
    with engine.connect() as conn:
        statement, params = _before(conn, None, str(compiled), params, None, False)
        if not params:  # the driver unescapes SQLAlchemy's "%%" only when it binds parameters
            statement = statement.replace("%%", "%")
        client = conn.connection.dbapi_connection.client
        try:
            got = client.query(statement, parameters=params, column_formats=formats).result_columns
        except Exception as exc:
            from observatory_core.storage.stores import store_for

            store, limit = store_for(engine), budget.limit_for(None)
            if limit is not None and store.is_timeout(exc):
                raise QueryTooSlow(budget.too_slow_message(limit[1])) from exc
            if store.is_too_large(exc):
                raise QueryTooLarge(budget.too_large_message()) from exc
            raise
    # an empty answer can come without its columns: one empty list per selected column
    return got or [[] for _ in query.selected_columns]
