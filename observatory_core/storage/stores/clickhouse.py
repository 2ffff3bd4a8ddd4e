"""ClickHouse, the span store (docs/scale.md): the query builders' SQL on clickhouse-connect's
SQLAlchemy dialect, over a chDB folder or a server (`SpanStore.engine`).

It serves reads of spans only: orgs, users, jobs and the rest stay in `DATABASE_URL`, so the
members for writes, locks, jobs and retention say so rather than pretend. What this module adds
to the builders' SQL:

- `spans` is read as stored, one row per span (`storage/clickhouse/fold_copies.py`), its id a
  stored column (schema version 8): no derived table, so the engine's top-n sort with lazy
  columns reads a page's other columns for its rows alone;
- `trace_totals` is read as a derived table summing the store's partial rows
  (`storage/clickhouse/trace_totals.py`), with the columns the other stores keep;
- `spans.id` is a 63-bit hash of the span's identity (`layout.SPAN_ID_SQL`): unique per span,
  so keyset pages break ties by it;
- a page's pin (`arrival_order`) is the write's `version`, not the id: spans written after the
  first page stay out of the later ones, as on the other stores.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Insert, Select, functions
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.base.errors import ConfigError
from observatory_core.storage import latency_bins
from observatory_core.storage.clickhouse import sketch_sql
from observatory_core.storage.clickhouse import trace_totals as totals
from observatory_core.storage.clickhouse.layout import SPAN_ID_SQL
from observatory_core.storage.dialect import (
    actor_pairs,
    arrival_order,
    bin_map,
    bin_map_pairs,
    epoch_us,
    greatest_of,
    json_array_contains,
    json_object_text,
    json_tag_value,
    latency_bin,
    least_of,
    nano_dollars,
    percentile_cont,
    rollup_count,
    stddev_samp,
    text_search,
    time_bucket,
    zoned_bucket,
)
from observatory_core.storage.packed_sketch import (
    sketch_add,
    sketch_compact,
    sketch_merge,
    sketch_of,
)
from observatory_core.storage.schema import spans, trace_totals
from observatory_core.storage.stores import register
from observatory_core.storage.stores._copies import on_newest_copy
from observatory_core.storage.stores.base import SpanPartition, Store

NAME = "clickhousedb"  # clickhouse-connect's dialect (storage/clickhouse/layout.py)
# The text columns' search expression, as the n-gram skip indexes hold it (layout.py).
_SEARCH = "lower(ifNull({}, ''))"
_ONLY_SPANS = (
    "The ClickHouse span store serves span reads only; orgs, users, jobs and their writes stay "
    "in DATABASE_URL (docs/scale.md)."
)

# -- the neutral constructs, compiled for ClickHouse -----------------------------------------


@compiles(percentile_cont, NAME)
def _percentile(element, compiler, **kw):
    """Exact, interpolated as PostgreSQL's percentile_cont (the 'inclusive' definition); NULL
    over no rows, as there."""
    values = compiler.process(element.clauses, **kw)
    return f"quantileExactInclusiveOrNull({element.fraction!r})({values})"


def _or_null(name: str):
    def compile_(element, compiler, **kw):
        return f"{name}OrNull({compiler.process(element.clauses, **kw)})"

    return compile_


# min, max and avg over no rows are NULL in SQL; the engine answers a type's default (0, the
# epoch) or NaN, which a total over an empty range (a metric's min, the first span's time)
# would show as a value. Their -OrNull forms answer NULL.
for _function in (functions.min, functions.max):
    compiles(_function, NAME)(_or_null(_function.__name__))


@compiles(functions.Function, NAME)
def _function(element, compiler, **kw):
    """`func.avg` (SQLAlchemy has no class of its own for it) as `avgOrNull`; the rest as is."""
    if element.name.lower() == "avg":
        return _or_null("avg")(element, compiler, **kw)
    return compiler.visit_function(element, **kw)


@compiles(bin_map, NAME)
def _bin_map(element, compiler, **kw):
    """As the rollups' views fill `latency_bins` (layout.py compiles this same construct), so
    raw edges and rollup rows merge by adding counts bin by bin."""
    b = compiler.process(element.clauses, **kw)
    return f"sumMapIf(map(toUInt16(ifNull({b}, 0)), toUInt64(1)), ({b}) IS NOT NULL)"


# A bin in the top 10 bits of a 64-bit number, its count in the 54 below as a signed number:
# a row's count of one bin below 2**53, or the UInt64 complement of one (2**64 - c, a wrapper's
# bins taken out of a rollup key: storage/clickhouse/wrapper_moves.py), whose low 54 bits read
# as -c. The merged counts are added as 64-bit numbers, so a bin's total is exact, as `sumMap`
# adds (a complement packed as it is set the bin bits: bin 1023, past the last).
_COUNT_BITS = 54
assert latency_bins.BINS <= 2 ** (64 - _COUNT_BITS)


@compiles(bin_map_pairs, NAME)
def _bin_map_pairs(element, compiler, **kw):
    """The group's maps' (bin, count) pairs, each packed in one number (bin on top), gathered
    and sorted: the bins ascend and each bin's counts lie together, added run by run. `sumMap`
    did the same work 1.6 times slower over many small groups (its map per group), but a
    total's one group of many rows it adds faster and in bounded memory, where the sort holds
    every pair (docs/span-store-internals.md, "Metrics on rollups"): totals keep `sumMap`. Each
    (UInt16, UInt64) pair as its 10 bytes, the text in hexadecimal."""
    m = compiler.process(element.clauses, **kw)
    if element.totals:  # sumMap's keys come out ascending
        merged = f"sumMap({m})"
        pair = "concat(reinterpretAsFixedString(k), reinterpretAsFixedString(v))"
        return (
            f"hex(arrayStringConcat(arrayMap((k, v) -> {pair}, "
            f"mapKeys({merged}), mapValues({merged}))))"
        )
    bits, mask, sign = _COUNT_BITS, 2**_COUNT_BITS - 1, 2 ** (_COUNT_BITS - 1)
    packed = (
        f"arraySort(arrayFlatten(groupArray(arrayMap((k, v) -> "
        f"bitOr(bitShiftLeft(toUInt64(k), {bits}), bitAnd(v, {mask})), "
        f"mapKeys({m}), mapValues({m})))))"
    )
    runs = (  # one array per bin (the engine computes the repeated `packed` once)
        f"arraySplit((x, d) -> d != 0, {packed}, "
        f"arrayDifference(arrayMap(x -> bitShiftRight(x, {bits}), {packed})))"
    )
    pair = (
        f"concat(reinterpretAsFixedString(toUInt16(bitShiftRight(r[1], {bits}))), "
        f"reinterpretAsFixedString(arraySum(arrayMap(x -> toInt64(bitAnd(x, {mask})) "
        f"- if(bitAnd(x, {mask}) >= {sign}, {2**_COUNT_BITS}, 0), r))))"
    )
    return f"hex(arrayStringConcat(arrayMap(r -> {pair}, {runs})))"


@compiles(actor_pairs, NAME)
def _actor_pairs(element, compiler, **kw):
    user, session = (compiler.process(c, **kw) for c in element.clauses)
    return f"arrayJoin([('user', {user}), ('session', {session})])"


@compiles(rollup_count, NAME)
def _rollup_count(element, compiler, **kw):
    """The rollups' counts are `SimpleAggregateFunction(sum, UInt64)` here (layout.py)."""
    return f"toUInt64({compiler.process(element.clauses, **kw)})"


def _micros(value: str) -> str:
    return f"toUnixTimestamp64Micro(toDateTime64({value}, 6, 'UTC'))"


@compiles(time_bucket, NAME)
def _bucket(element, compiler, **kw):
    width = element.seconds * 1_000_000
    value = _micros(compiler.process(element.clauses, **kw))
    return f"fromUnixTimestamp64Micro(intDiv({value}, {width}) * {width}, 'UTC')"


_ZONED = {60: "toStartOfMinute", 3600: "toStartOfHour", 86_400: "toStartOfDay"}


@compiles(zoned_bucket, NAME)
def _zoned_bucket(element, compiler, **kw):
    """The engine knows the zones: the start of the local minute, hour, day or ISO week (from
    Monday), or of a width of the local clock counted from 2000-01-03 (as PostgreSQL's)."""
    value = compiler.process(element.clauses, **kw)
    zone = element.bucketing.zone.name.replace("'", "''")  # a checked IANA name
    seconds = element.bucketing.seconds
    local = f"toDateTime64({value}, 6, '{zone}')"
    if seconds in _ZONED:
        start = f"{_ZONED[seconds]}({local})"
    elif seconds == 7 * 86_400:
        start = f"toDateTime(toMonday({local}), '{zone}')"
    else:
        start = (
            f"toDateTime(toDateTime('2000-01-03 00:00:00', '{zone}') + intDiv(dateDiff('second', "
            f"toDateTime('2000-01-03 00:00:00', '{zone}'), {local}), {seconds}) * {seconds}, "
            f"'{zone}')"
        )
    return f"toDateTime64({start}, 6, 'UTC')"


@compiles(stddev_samp, NAME)
def _stddev(element, compiler, **kw):
    value = compiler.process(element.clauses, **kw)
    return f"if(count({value}) < 2, NULL, stddevSamp({value}))"


@compiles(json_array_contains, NAME)
def _array_contains(element, compiler, **kw):
    """Tags are a native array here (layout.py)."""
    column, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"has({column}, {value})"


@compiles(json_object_text, NAME)
def _object_text(element, compiler, **kw):
    """The key's text as PostgreSQL's ->> gives it: a string unquoted, anything else as its
    JSON, NULL when absent or null."""
    column, key = (compiler.process(c, **kw) for c in element.clauses)
    doc = f"ifNull({column}, '')"
    return (
        f"if(JSONType({doc}, {key}) IN ('Null', 'Nothing') OR NOT JSONHas({doc}, {key}), NULL, "
        f"if(JSONType({doc}, {key}) = 'String', JSONExtractString({doc}, {key}), "
        f"JSONExtractRaw({doc}, {key})))"
    )


@compiles(json_tag_value, NAME)
def _tag_value(element, compiler, **kw):
    column = compiler.process(element.clauses, **kw)
    prefix, n = element.prefix, len(element.key) + 1
    found = f"arrayFirstIndex(t -> startsWith(t, {prefix}), {column})"
    return f"if({found} = 0, NULL, substring({column}[{found}], {n + 1}))"


@compiles(text_search, NAME)
def _search(element, compiler, **kw):
    """LIKE on the lower-cased text, the n-gram skip indexes' own expression, for a needle of
    ASCII text (the engine's `lower` folds ASCII only); other text compares `lowerUTF8`."""
    _id, inp, out, needle = element.clauses
    ascii_only = needle.value.isascii()
    fold = "lower" if ascii_only else "lowerUTF8"
    texts = (f"{fold}(ifNull({compiler.process(c, **kw)}, ''))" for c in (inp, out))
    pattern = compiler.process(needle, **kw)
    return "(" + " OR ".join(f"{t} LIKE {pattern}" for t in texts) + ")"


@compiles(latency_bin, NAME)
def _latency_bin(element, compiler, **kw):
    """`latency_bins.bin_of` in SQL; NULL for NULL (the engine's `greatest(1, NULL)` is 1)."""
    d = compiler.process(element.clauses, **kw)
    floor, top = latency_bins.ABSOLUTE_FLOOR_MS, latency_bins.LAST_EDGE_MS
    last = latency_bins.BINS - 1
    return (
        f"if({d} IS NULL, NULL, multiIf({d} <= {floor!r}, 0, {d} > {top!r}, {last}, "
        f"least({last - 1}, greatest(1, toInt32(ceil(log({d} / {floor!r}) / "
        f"log({latency_bins.GAMMA!r}) - 1e-12))))))"
    )


@compiles(nano_dollars, NAME)
def _nano_dollars(element, compiler, **kw):
    return f"round({compiler.process(element.clauses, **kw)}, 9)"


@compiles(least_of, NAME)
def _least(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"if({a} IS NULL, {b}, if({b} IS NULL, {a}, least({a}, {b})))"


@compiles(greatest_of, NAME)
def _greatest(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"if({a} IS NULL, {b}, if({b} IS NULL, {a}, greatest({a}, {b})))"


@compiles(epoch_us, NAME)
def _epoch_us(element, compiler, **kw):
    return _micros(compiler.process(element.clauses, **kw))


@compiles(arrival_order, NAME)
def _arrival(element, compiler, **kw):
    """The write's version (microseconds at the write), of the same table as the id given."""
    (column,) = element.clauses
    table = getattr(column, "table", None)
    if table is trace_totals or getattr(table, "element", None) is trace_totals:
        # a trace's writes (storage/clickhouse/trace_totals.py), of the table or an alias of it
        prefix = "trace_totals" if table is trace_totals else _alias_name(compiler, table)
        return f"{prefix}.{totals.ARRIVAL[column.name]}"
    name = compiler.preparer.format_table(table, use_schema=False) if table is not None else None
    return f"{name}.version" if name else "version"


# Sketches: built and merged as on the other stores (storage/clickhouse/sketch_sql.py).
@compiles(sketch_of, NAME)
def _sketch_of(element, compiler, **kw):
    bin_ = compiler.process(element.clauses, **kw)
    return sketch_sql.records(
        f"arrayMap(kv -> (kv.1, kv.2), CAST(sumMap(map(toUInt32({bin_}), "
        "toUInt64(1))), 'Array(Tuple(UInt32, UInt64))'))"
    )


@compiles(sketch_merge, NAME)
def _sketch_merge(element, compiler, **kw):
    return f"groupArrayStringConcat({compiler.process(element.clauses, **kw)})"


@compiles(sketch_compact, NAME)
def _sketch_compact(element, compiler, **kw):
    return sketch_sql.records(
        sketch_sql.summed(sketch_sql.decoded(compiler.process(element.clauses, **kw)))
    )


@compiles(sketch_add, NAME)
def _sketch_add(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return sketch_sql.records(sketch_sql.summed(sketch_sql.decoded(f"concat({a}, {b})")))


# -- spans, one row per span -----------------------------------------------------------------


def _conjuncts(where) -> list:
    if where is None:
        return []
    from sqlalchemy.sql import operators
    from sqlalchemy.sql.elements import BooleanClauseList

    if isinstance(where, BooleanClauseList) and where.operator is operators.and_:
        return list(where.clauses)
    return [where]


def _database(compiler) -> str:
    database = getattr(compiler.dialect, "observatory_database", None)
    if not database:
        raise ConfigError(
            "This SQL reads the span store's tables but its engine names no database: open "
            "the engine with `SpanStore.engine` (storage/clickhouse/connect.py)."
        )
    return database


def _inner_kw(kw: dict) -> dict:
    """The compile arguments for a condition moved inside a derived table: not a FROM, and not
    under the alias the table stands for (a subquery in it reads its own tables)."""
    dropped = ("enclosing_alias", "subquery", "lateral", "enclosing_lateral")
    return {**{k: v for k, v in kw.items() if k not in dropped}, "asfrom": False}


def _alias_name(compiler, alias) -> str:
    """The alias's name as `visit_alias` writes it (an anonymous one made concrete)."""
    from sqlalchemy.sql import elements

    name = alias.name
    if isinstance(name, elements._truncated_label):
        name = compiler._truncated_identifier("alias", name)
    return compiler.preparer.format_alias(alias, name)


@compiles(Table, NAME)
def _table(element, compiler, asfrom=False, **kw):
    """`spans` as the stored table, each span one row (`storage/clickhouse/fold_copies.py`)
    with its id stored (schema version 8, `layout.SPAN_ID_COLUMN`), so the query's conditions,
    order and limit apply to it directly; `trace_totals` as a derived table of summed rows
    (`_trace_totals`); other tables in the store's database."""
    if not asfrom:
        return compiler.visit_table(element, asfrom=asfrom, **kw)
    database = _database(compiler)
    query = compiler.stack[-1]["selectable"] if compiler.stack else None
    if element is trace_totals:
        return _trace_totals(compiler, database, query, kw)
    if element is not spans:
        return f"{database}.{compiler.visit_table(element, asfrom=True, **kw)}"
    # under an alias (`spans.alias("tree")`), the alias names itself
    alias = kw.get("enclosing_alias")
    return f"{database}.spans" + (
        "" if alias is not None and alias.element is spans else " AS spans"
    )


def _trace_totals(compiler, database: str, query, kw) -> str:
    """`trace_totals` summed from its partial rows (storage/clickhouse/trace_totals.py), with
    the query's conditions on the org and the trace applied first (under an alias, the
    conditions on the alias's columns), and its traces narrowed by the bounds on their times."""
    alias = kw.get("enclosing_alias")
    source = alias if alias is not None and alias.element is trace_totals else trace_totals
    name = "trace_totals" if source is trace_totals else _alias_name(compiler, alias)
    conjuncts, ikw = _conjuncts(query.whereclause if query is not None else None), _inner_kw(kw)
    inner = [compiler.process(c, **ikw) for c in conjuncts if totals.on_key(c, source)]
    bounds = [
        (*b[:2], compiler.process(b[2], **ikw)) for b in totals.time_bounds(conjuncts, source)
    ]
    inner += [totals.traces_within(database, name, inner, bounds)] if bounds else []
    derived = totals.derived(database, inner, SPAN_ID_SQL, name)
    return derived + (" AS trace_totals" if source is trace_totals else "")


# -- the store -------------------------------------------------------------------------------


class ClickHouseStore(Store):
    name = NAME
    writer_threads = 1
    walks_sort_index = False  # no secondary indexes to walk: the engine sorts the window
    timestamps_as_micros = False  # DateTime64(6, 'UTC')
    copies_csv = False
    pages_exports_by_window = True  # a keyset page sorts all the window after its cursor
    correlated_reads = False  # no row index: traces mode takes its uncorrelated plans here
    rollup_bin_maps = True  # the latency bins as a map, not the packed sketch (layout.py)
    rollups_cancel_out = True  # a wrapper move's opposite rows (wrapper_moves.py)
    reads_declared_slots = False  # no back-fill of stored spans here yet (docs/scale.md)
    actor_grains = ("1hour",)  # `rollup_actors_1hour` (schema version 5, docs/scale.md)
    groups_trace_totals = True  # one grouping of trace_totals per trace metric and tree rank
    ors_time_ranges = True  # one piece per grain, its ranges or'ed
    reads_actors_once = True  # the actors' edges: one read of spans for users and sessions
    pairs_periods = True  # the Overview's two periods' traces and actors: a statement each
    shares_alert_windows = True  # an exact window's alert batches: one grouping-sets statement
    sums_trees_from_spans = True  # trace totals still count racing copies (docs/scale.md)
    pages_by_prefix = True  # traces mode: roots by start time within a stretch of stored roots

    def on_newest_copy(self, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        return on_newest_copy(condition)

    def newest_arrival(self, conn: Connection) -> int:
        """Now, in the write clock's microseconds (`writes.py` stamps `version` with it): the
        newest version would be a read of every org's spans, and tell one org when another
        last wrote."""
        return time.time_ns() // 1000

    def pin_of_snapshot(self, recorded: int, taken_at: datetime) -> int:
        """`taken_at` on the write clock (microseconds, as `writes.py` stamps `version`): the
        spans written before the snapshot, whatever `recorded` (an id of `DATABASE_URL`)."""
        return (taken_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

    def normalize_url(self, url: URL) -> URL:
        raise ConfigError(
            "DATABASE_URL cannot name ClickHouse; set OBSERVATORY_SPAN_STORE to it instead "
            "(docs/scale.md)."
        )

    def create_engine(self, url: URL) -> Engine:
        raise ConfigError(
            "Open the span store's engine with `SpanStore.engine` (storage/clickhouse/connect.py)."
        )

    def probe(self, conn: Connection) -> None:
        conn.exec_driver_sql("SELECT 1")

    def describe_failure(self, url: URL, detail: str) -> str:
        return f"Cannot reach the ClickHouse span store ({detail}); check OBSERVATORY_SPAN_STORE."

    def install_budget(self, engine: Engine) -> None:
        from observatory_core.storage.clickhouse.sql import install_budget

        install_budget(engine)

    def is_timeout(self, exc: BaseException) -> bool:
        text = str(exc)
        return "Code: 159." in text or "TIMEOUT_EXCEEDED" in text

    def is_too_large(self, exc: BaseException) -> bool:
        from observatory_core.storage.clickhouse.reads import over_read_memory

        return over_read_memory(exc)

    def insert(self, table: Table) -> Insert:
        raise NotImplementedError(_ONLY_SPANS)

    def prepare_temp_table(self, conn: Connection, table: Table, like: str) -> None:
        raise NotImplementedError(_ONLY_SPANS)

    def insert_spans(
        self,
        conn: Connection,
        rows: list[dict[str, Any]],
        columns: Sequence[str],
        new: Table | None,
    ) -> int:
        raise NotImplementedError(
            "Spans reach the ClickHouse store through storage/clickhouse/writes.py."
        )

    def analyze(self, conn: Connection, tables: Iterable[Table]) -> None:
        return None  # the engine keeps no planner statistics

    def xact_lock(self, conn: Connection, key: int) -> None:
        raise NotImplementedError(_ONLY_SPANS)

    def try_lock(self, conn: Connection, key: int) -> bool:
        raise NotImplementedError(_ONLY_SPANS)

    def unlock(self, conn: Connection, key: int) -> None:
        raise NotImplementedError(_ONLY_SPANS)

    def claimable(self, candidate: Select) -> Select:
        raise NotImplementedError(_ONLY_SPANS)

    def read_outside_transaction(self, conn: Connection) -> Connection:
        return conn  # no transactions: every statement stands alone

    def tune_read(self, conn: Connection, *, by_index: bool) -> None:
        return None  # memory and time bounds go on each statement (`install_budget`)

    def index_hint(self, query: Select, table: Table, index: str) -> Select:
        return query  # skip indexes are used without hints

    def search_needle(self, text: str) -> str:
        """Lower-cased as the n-gram indexes hold the text (ASCII by `lower`, the rest by
        `lowerUTF8`, `_search`), LIKE's wildcards escaped."""
        folded = text.lower()
        escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return "%" + escaped + "%"

    def contains_literally(self, value: ColumnElement[str], text: str) -> ColumnElement[bool]:
        """The engine's LIKE has no ESCAPE clause; its escape character is the backslash."""
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return value.like(f"%{escaped}%")

    def copy_csv_rows(
        self, engine: Engine, org_id: int, ids: list[int], fields: tuple[str, ...]
    ) -> bytes:
        raise NotImplementedError(
            "The span store has no COPY: exports read it page by page (`copies_csv`)."
        )

    def span_partitions(self, conn: Connection) -> list[SpanPartition] | None:
        return None  # monthly parts are the engine's own; the TTL drops spans (docs/scale.md)

    def create_span_partition(self, conn: Connection, month: datetime) -> str:
        raise NotImplementedError("The span store partitions by month itself (docs/scale.md).")

    def drop_span_partition(self, conn: Connection, partition: SpanPartition) -> int:
        raise NotImplementedError("The span store's TTL deletes old spans (docs/scale.md).")

    def reclaim_space(self, engine: Engine) -> int:
        return 0  # merges give the space of deleted rows back

    def space_reclaim_status(self, engine: Engine) -> str | None:
        return None

    def enable_space_reclaim(self, engine: Engine) -> str:
        return "Nothing to do: the span store's merges give deleted rows' space back."


STORE = register(ClickHouseStore())
