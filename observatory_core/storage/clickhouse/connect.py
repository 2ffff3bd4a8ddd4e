"""One clickhouse-connect client for both kinds of target, and `SpanStore`, what the rest of
the package works with (the client, the database its tables live in, the target).

The chDB engine runs in this process: one data folder per process (chDB refuses a second
one while a client is open), so a test or a tool that switches folders closes the store first.
Every statement names its tables with the database (`SpanStore.table`), so the client needs
no current database and the DDL can create it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from observatory_core.base.errors import ConfigError, DatabaseUnavailable, QueryTooSlow
from observatory_core.storage import budget
from observatory_core.storage.clickhouse.cluster import Naming, check_server
from observatory_core.storage.clickhouse.target import SETTING, SpanStoreTarget, parse_target

# How long a read may run on the engine before it stops it (seconds); the span list and totals
# pass it per query, as `statement_timeout` bounds reads on PostgreSQL (docs/architecture.md,
# "Every request is bounded").
READ_SECONDS = 10


# One per target: every writer of this process to a store takes turns, however many times the
# store was opened (`writes.py`: the check for stored spans and the insert must not interleave).
_WRITE_LOCKS: dict[SpanStoreTarget, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _write_lock(target: SpanStoreTarget) -> threading.Lock:
    with _LOCKS_LOCK:
        return _WRITE_LOCKS.setdefault(target, threading.Lock())


# The in-process engine runs one statement at a time (clickhouse-connect's chDB client queues
# them on a lock of its own, untimed): every statement of this process on a chDB folder takes
# this turn first, so a read under a time budget waits for the engine no longer than its
# budget (review of issue 17's first slice: a read under 1 s waited 5.7 s behind a query).
_ENGINE_TURNS: dict[str, threading.Lock] = {}
STATEMENTS = frozenset({"query", "command", "insert", "raw_query", "raw_insert"})


class _Turns:
    """A chDB client whose statements take the folder's turn, waiting at most the caller's
    time budget (none outside one: writes and schema changes wait as long as needed)."""

    def __init__(self, client: Any, turn: threading.Lock) -> None:
        self._client = client
        self._turn = turn

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in STATEMENTS:
            return attr

        def statement(*args: Any, **kwargs: Any) -> Any:
            left = budget.remaining()
            if not self._turn.acquire(timeout=-1 if left is None else max(0.0, left)):
                raise QueryTooSlow(budget.too_slow_message(budget.seconds_of_current() or 0))
            try:
                return attr(*args, **kwargs)
            finally:
                self._turn.release()

        return statement


def _turn_of(path: str) -> threading.Lock:
    with _LOCKS_LOCK:
        return _ENGINE_TURNS.setdefault(path, threading.Lock())


@dataclass
class SpanStore:
    """An open span store: `client` for statements, `database` for table names."""

    target: SpanStoreTarget
    client: Any  # clickhouse_connect.driver.client.Client (imported lazily)
    write_lock: threading.Lock = field(init=False)

    _engine: Any = field(init=False, default=None, repr=False)
    _known: dict[str, bool] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.write_lock = _write_lock(self.target)

    @property
    def engine(self):
        """An SQLAlchemy engine on this store's client, for the query builders
        (`storage/clickhouse/sql.py`); made on first use."""
        if self._engine is None:
            from observatory_core.storage.clickhouse.sql import open_engine

            self._engine = open_engine(self)
        return self._engine

    @property
    def database(self) -> str:
        return self.target.database

    @property
    def naming(self) -> Naming:
        """Where this store's tables are: one node, or the URL's cluster (`cluster.py`)."""
        return Naming(self.database, self.target.cluster)

    def knows(self, setting: str) -> bool:
        """Whether the server has the query setting `setting` (a release before it refuses
        every statement that sends it): from the settings the driver fetched as it connected,
        else read once from `system.settings`."""
        if setting not in self._known:
            fetched = getattr(self.client, "server_settings", None) or {}
            if fetched:
                self._known[setting] = setting in fetched
            else:
                rows = self.client.query(
                    "SELECT count() FROM system.settings WHERE name = %(name)s",
                    parameters={"name": setting},
                ).result_rows
                self._known[setting] = bool(rows[0][0])
        return self._known[setting]

    def table(self, name: str) -> str:
        """`database.name`, as every statement writes it."""
        return f"{self.database}.{name}"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self.client.close()


# The in-process engine's options (its startup arguments): a cache of decompressed blocks of up
# to 512 MiB, which chDB's defaults leave out. A statement reads through it when it asks
# (`sql._asked`, execution option `block_cache`): the traces by a tree total read the org's
# trace totals and the window's granules at every request. Read through it by every statement,
# the explorer's first pages and searches took 25-55 % less CPU at 1M (traces by tree cost about
# a fifth to a quarter), for about 250 MB more resident memory, but a read's cached blocks count
# against its memory bound (docs/span-store-internals.md, "Where the first pages' time goes").
# A read of more than `merge_tree_max_rows_to_use_cache` rows (1,048,576) neither uses nor
# fills it. Blocks are keyed by file path and offset, and parts never change in place (a
# mutation, merge or delete writes a new part), so a cached block is what its file holds; but a
# table reloaded in a running engine (DETACH/ATTACH after all its parts went) can reuse a part's
# name: nothing here does that, and whatever does must `SYSTEM DROP UNCOMPRESSED CACHE` after.
CHDB_OPTIONS = {"uncompressed_cache_size": 512 * 2**20}


def _client(target: SpanStoreTarget):
    import clickhouse_connect

    if target.in_process:
        client = clickhouse_connect.get_client(
            interface="chdb", path=target.path, chdb_options=CHDB_OPTIONS
        )
        return _Turns(client, _turn_of(str(target.path)))
    return clickhouse_connect.get_client(
        host=target.host,
        port=target.port,
        username=target.username,
        password=target.password,
        secure=target.secure,
        connect_timeout=5,
        # a server that accepts and never answers: the driver's default wait is 300 s per
        # statement (reads carry their own, shorter `max_execution_time`)
        send_receive_timeout=60,
        # no HTTP session: a session serialises a client's queries, and writer threads share it
        autogenerate_session_id=False,
    )


def open_client(target: SpanStoreTarget):
    """A clickhouse-connect client for `target`, or a `DatabaseUnavailable` saying why not."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    try:
        return _client(target)
    except ClickHouseError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if target.in_process:
            raise DatabaseUnavailable(
                f"Cannot open the chDB span store at {target.path} ({detail}). A chDB folder "
                "is open in one process at a time, and a process opens one folder: stop the "
                "other process using it (or give that process a ClickHouse server's URL), "
                "close a store on another folder, or check that the folder is writable."
            ) from None
        raise DatabaseUnavailable(
            f"Cannot reach the ClickHouse span store at {target.describe()} ({detail[:300]}). "
            f"Check that the server is running and that {SETTING} has the right host, port, "
            "user and password."
        ) from None


def open_span_store(url: str | None = None, *, apply_schema: bool = True) -> SpanStore:
    """The span store `url` names (default: the `OBSERVATORY_SPAN_STORE` setting), its schema
    brought up to date (`ddl.apply_schema`, idempotent); on a cluster, refused first when the
    server is too old for the writes (`cluster.check_server`)."""
    if url is None:
        from observatory_core.base.settings import get_settings

        url = get_settings().span_store
        if not url:
            raise ConfigError(
                f"{SETTING} is not set: spans are kept in DATABASE_URL. Set it to use the "
                "ClickHouse span store (docs/scale.md)."
            )
    target = parse_target(url)
    store = SpanStore(target, open_client(target))
    try:
        check_server(store.client, store.naming)  # a cluster's server new enough
        if apply_schema:
            from observatory_core.storage.clickhouse.ddl import apply_schema as apply

            apply(store)
    except BaseException:
        store.close()
        raise
    return store
