"""What a store must provide: every behaviour that differs between the databases we support.

Feature code writes one query and asks `store_for(bind)` (storage/stores/__init__.py) for the
few things SQL alone cannot say the same way everywhere. Each store module also registers its
SQL for the dialect-neutral constructs of `storage/dialect.py` and `storage/packed_sketch.py`
with `@compiles(construct, store.name)`; `tests/storage/test_stores.py` checks that every
store compiles every construct and implements every member below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import URL
from sqlalchemy.sql import ColumnElement, Insert, Select


def month_start(value: datetime) -> datetime:
    """The first instant (UTC) of `value`'s calendar month."""
    value = value.astimezone(UTC)
    return datetime(value.year, value.month, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SpanPartition:
    """One month of spans in a store that partitions them (migration 0017)."""

    name: str
    start: datetime
    end: datetime


class PartitionBusy(RuntimeError):
    """Readers or writers held the span table longer than a partition change may wait; the
    transaction was rolled back and the next retention run tries again."""


class Store(ABC):
    """One database product: SQLite, PostgreSQL (and, later, others)."""

    # -- identity and connections ------------------------------------------------------------

    @property
    @abstractmethod
    def name(self) -> str:
        """The SQLAlchemy dialect name this store serves (`engine.dialect.name`)."""

    @abstractmethod
    def normalize_url(self, url: URL) -> URL:
        """The URL the engine opens: the driver we support filled in, or a `ConfigError`
        naming the fix when the URL asks for a driver we do not support."""

    @abstractmethod
    def create_engine(self, url: URL) -> Engine:
        """An engine with this store's connection set-up (session settings, functions the SQL
        of the constructs relies on) and with time budgets installed (`storage/budget.py`)."""

    @abstractmethod
    def probe(self, conn: Connection) -> None:
        """Touch the schema (not just the socket), so a locked or missing database fails here
        with the driver's error instead of on the first real query."""

    @abstractmethod
    def describe_failure(self, url: URL, detail: str) -> str:
        """One sentence for a failed connection: what is wrong and what to do about it."""

    # -- time budgets ------------------------------------------------------------------------

    @abstractmethod
    def install_budget(self, engine: Engine) -> None:
        """Make the database stop any statement run under a budget (`budget.limit_for`) once
        the budget is spent, and leave no limit behind on a pooled connection afterwards."""

    @abstractmethod
    def is_timeout(self, exc: BaseException) -> bool:
        """True when the driver's error is a statement stopped by `install_budget`'s limit."""

    def is_too_large(self, exc: BaseException) -> bool:
        """True when the driver's error is a read stopped by its memory bound (only the span
        store bounds a read's memory; SQLite and PostgreSQL spill to disk)."""
        return False

    # -- writes ------------------------------------------------------------------------------

    @property
    @abstractmethod
    def writer_threads(self) -> int:
        """How many ingest writer threads pay off: concurrent write transactions the store
        serves side by side (the rollup fold still takes turns under `xact_lock`)."""

    @abstractmethod
    def insert(self, table: Table) -> Insert:
        """An INSERT for `table` that supports `.on_conflict_do_nothing()` and
        `.on_conflict_do_update(index_elements=..., set_=...)` with `.excluded`."""

    @abstractmethod
    def prepare_temp_table(self, conn: Connection, table: Table, like: str) -> None:
        """Make the temporary `table` (its name and columns, taken from the permanent table
        `like`) exist on this connection and be empty, for use inside the transaction."""

    @abstractmethod
    def insert_spans(
        self,
        conn: Connection,
        rows: list[dict[str, Any]],
        columns: Sequence[str],
        new: Table | None,
    ) -> int:
        """Insert complete span rows (`columns` of `spans`), skipping any whose
        (org_id, trace_id, span_id) exists; copy the rows really inserted into the
        temporary table `new` (prepared here, with `new`'s columns) when given. Returns how
        many were inserted. Runs in the caller's transaction."""

    @abstractmethod
    def analyze(self, conn: Connection, tables: Iterable[Table]) -> None:
        """Refresh the planner's statistics after a bulk rewrite (a no-op where the planner
        keeps none worth refreshing)."""

    # -- concurrency -------------------------------------------------------------------------

    @abstractmethod
    def xact_lock(self, conn: Connection, key: int) -> None:
        """Wait for the lock `key`, held until the transaction ends, so writers that would
        otherwise deadlock take turns (a no-op on a store with a single writer)."""

    def org_turns(
        self, engine: Engine, orgs: list[int], wait_s: float
    ) -> AbstractContextManager[None]:
        """Hold the span store's write turns of `orgs` (sorted), shared by every process using
        this database, waiting at most `wait_s` (`turns.TurnBusy` past it):
        docs/span-store-internals.md, "The write turn". A store kept by one process needs none
        beyond its own lock."""
        return nullcontext()

    @abstractmethod
    def try_lock(self, conn: Connection, key: int) -> bool:
        """Take the session lock `key` without waiting; False when another process holds it.
        A store with a single worker process may always answer True."""

    @abstractmethod
    def unlock(self, conn: Connection, key: int) -> None:
        """Release `try_lock`'s lock."""

    @abstractmethod
    def claimable(self, candidate: Select) -> Select:
        """The SELECT that picks a job row to claim, made safe for concurrent workers: two
        workers never claim the same row, and neither waits on rows another has locked."""

    @abstractmethod
    def read_outside_transaction(self, conn: Connection) -> Connection:
        """A connection whose single reads run without BEGIN/ROLLBACK round trips where the
        store would otherwise pay them."""

    # -- reads and the planner ---------------------------------------------------------------

    # Whether a subquery per outer row (a correlated EXISTS or scalar subquery) is an index
    # probe here. The span store has no row index: each would read a window of spans again,
    # so traces mode takes its uncorrelated plans there.
    correlated_reads: bool = True
    # Whether the rollups keep the latency bins as a map bin -> count (`latency_bins`, filled
    # with `bin_map`, read with `bin_map_pairs`) rather than the packed
    # latency sketch: the span store's. The same bins either way (storage/latency_bins.py).
    rollup_bin_maps: bool = False
    # Whether a rollup key's rows can add up to no span: the span store's, where a wrapper move
    # takes a stored wrapper out of the LLM calls with opposite rows where it cannot delete
    # the key's rows (docs/span-store-internals.md, "Wrapper moves and their journal"). Its
    # groupings of rollup rows then keep only the groups (and buckets) that count a span (`HAVING
    # sum(span_count) > 0`), as the other stores, whose rollup rows always count one, list them.
    rollups_cancel_out: bool = False
    # Whether the metrics engine may read a declared dimension from its slot (`rollups/
    # dimensions.py`: its back-fill's coverage is this store's); the span store has no back-fill
    # of stored spans yet, so a group-by on such a key reads the spans there.
    reads_declared_slots: bool = True
    # Whether `rollup_actors_*` exist here (distinct users and sessions of whole hours and
    # days), and which grains, coarsest first: the span store keeps the hour's alone.
    actor_rollups: bool = True
    actor_grains: tuple[str, ...] = ("1day", "1hour")
    # Whether `trace_totals` is read as a grouping of partial rows (the span store's,
    # storage/clickhouse/trace_totals.py): trace metrics then add up every trace's rows in one
    # grouping rather than reading whole rows and shared traces apart (metrics/trace_path.py),
    # and traces mode by a tree total adds up the matching traces' rows once per trace
    # (traces/tree_ranking.py, `_summed_matching`).
    groups_trace_totals: bool = False
    # Whether a read of several time ranges of one table is one piece with the ranges or'ed
    # (the rollup path's ragged edges, the distinct actors' edges) rather than a piece per
    # range: the span store's, where each piece is a pipeline of its own with a statement's
    # fixed cost; elsewhere an index serves each range best on its own.
    ors_time_ranges: bool = False
    # Whether the distinct actors' ragged edges read their spans once, each span's user and
    # session made two rows there (`dialect.actor_pairs`), rather than once per kind: the span
    # store's, where each read of spans scans its window with no index (rollups/actors.py).
    reads_actors_once: bool = False
    # Whether the Overview reads its two periods' totals, trace counts and distinct actors in
    # one statement each (reports/overview.py, metrics/totals.run_metric_totals): the span
    # store's, where each statement's reads of spans, rollups, trace totals and actors cost
    # more than an index probe (docs/span-store-internals.md).
    pairs_periods: bool = False
    # Whether the alert cycle reads the batches of one exact window together, one grouping
    # set per rule shape (alerts/shared_windows.py): the span store's, where each statement
    # costs some 5-10 ms however few spans it reads (docs/span-store-internals.md).
    shares_alert_windows: bool = False
    # Whether the Sessions view sums its traces' totals from the spans (one row each once
    # folded) rather than reading `trace_totals`: the span store's, whose views counted a span
    # written by two racing processes twice, and the fold does not correct them (docs/scale.md,
    # "Known gaps").
    sums_trees_from_spans: bool = False
    # Whether traces mode's page of roots by start time is read within a stretch of the
    # window's first stored roots (traces/root_stretches.py): the span store's,
    # where the plain read takes the roots of every trace with a span in the window
    # (docs/span-store-internals.md, "Traces mode"). Spans mode reads its pages in one statement
    # everywhere.
    pages_by_prefix: bool = False

    def on_newest_copy(self, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        """`condition` marked as one a span's copies may answer apart (a root's start time, a
        page's edge, traces/root_stretches.py): never taken as the same in every copy
        (`stores/_copies.py`). The condition as written: no store picks a newest copy (the span
        store stores each span once since schema version 7)."""
        return condition

    def newest_arrival(self, conn: Connection) -> int:
        """A first page's pin: the newest span's id where ids grow with each insert (the
        stores of `DATABASE_URL`). The span store overrides it without reading (its `version`
        is the write's clock)."""
        from sqlalchemy import func, select

        from observatory_core.storage.schema import spans

        return conn.execute(select(func.coalesce(func.max(spans.c.id), 0))).scalar_one()

    def pin_of_snapshot(self, recorded: int, taken_at: datetime) -> int:
        """The pin of a snapshot taken at `taken_at` (an export job's): `recorded`, the newest
        span id read from `DATABASE_URL` then, where ids grow. The span store overrides it with
        the write clock's `taken_at` (its `version`), so a job's pin does not depend on which
        store was read when it was created."""
        return recorded

    @abstractmethod
    def tune_read(self, conn: Connection, *, by_index: bool) -> None:
        """Session settings for one heavy analytic read in this transaction (memory for
        grouping; `by_index`: prefer index scans over sequential ones)."""

    @property
    @abstractmethod
    def walks_sort_index(self) -> bool:
        """True when the planner, asked for a sorted page under a filter, does not find the
        sort's index by itself, so the explorer first walks a stretch of it (`index_hint`)."""

    @abstractmethod
    def index_hint(self, query: Select, table: Table, index: str) -> Select:
        """`query` told to read `table` through `index` (unchanged where there are no hints)."""

    @abstractmethod
    def search_needle(self, text: str) -> str:
        """The bound value `text_search` matches with, `text` taken literally (no wildcards or
        query syntax of the user's survive)."""

    def contains_literally(self, value: ColumnElement[str], text: str) -> ColumnElement[bool]:
        """`value` holds `text`, its % and _ taken literally (LIKE ... ESCAPE)."""
        return value.contains(text, autoescape=True)

    @property
    @abstractmethod
    def timestamps_as_micros(self) -> bool:
        """True when `UtcDateTime` is stored as integer microseconds since the epoch (so
        `time_bucket` and `epoch_us` are integer arithmetic); False for a native timestamp."""

    # -- exports -----------------------------------------------------------------------------

    @property
    @abstractmethod
    def copies_csv(self) -> bool:
        """True when the database prints export CSV itself (`copy_csv_rows`)."""

    # An export reads its pages by windows of start time (`exports/span_store_pages.py`): the
    # span store's, where a page after a cursor is a sort of the job's whole remaining window
    # without an index, and a window bounds each read (docs/span-store-internals.md, "Exports").
    pages_exports_by_window: bool = False

    @abstractmethod
    def copy_csv_rows(
        self, engine: Engine, org_id: int, ids: list[int], fields: tuple[str, ...]
    ) -> bytes:
        """The CSV lines (no header) of these spans, oldest first, byte for byte what
        `exports.writers` would write. Only called when `copies_csv`."""

    # -- retention (storage/retention.py) ----------------------------------------------------

    @abstractmethod
    def span_partitions(self, conn: Connection) -> list[SpanPartition] | None:
        """The monthly span partitions, oldest first; None where spans are not partitioned."""

    @abstractmethod
    def create_span_partition(self, conn: Connection, month: datetime) -> str:
        """Create the partition of the month starting at `month` (moving any of its spans out
        of the default partition) and answer its name; raise `PartitionBusy` rather than make
        ingest or readers wait more than a moment."""

    @abstractmethod
    def drop_span_partition(self, conn: Connection, partition: SpanPartition) -> int:
        """Detach and drop `partition` in the caller's transaction; answer the bytes it held.
        Raise `PartitionBusy` rather than wait long for the table."""

    @abstractmethod
    def reclaim_space(self, engine: Engine) -> int:
        """Hand space freed by deletes back to the file system where the store does so on
        request; answer the bytes returned (0 where space is reused in place)."""

    @abstractmethod
    def space_reclaim_status(self, engine: Engine) -> str | None:
        """None when deletes give space back (at once or through `reclaim_space`); else one
        sentence saying what an operator must do once to switch it on."""

    @abstractmethod
    def enable_space_reclaim(self, engine: Engine) -> str:
        """Switch on what `space_reclaim_status` asks for (run with the server stopped);
        answer what was done."""
