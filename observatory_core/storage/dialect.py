"""Dialect-neutral SQL constructs: feature modules write one query for every store.

Each store module (storage/stores/) registers how each construct compiles on its database,
and `tests/storage/test_stores.py` checks that every store compiles every one of them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Integer,
    String,
    Table,
    cast,
    literal,
    literal_column,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from observatory_core.base.zones import Bucketing
from observatory_core.semantic.field_declaration import KEY_SQL, KeyKind
from observatory_core.semantic.field_lookups import KEY_HINT, KEY_PATTERN
from observatory_core.storage.stores import store_for
from observatory_core.storage.types import UtcDateTime


class percentile_cont(FunctionElement):
    """Exact continuous percentile (linear interpolation), like PostgreSQL's percentile_cont."""

    type = Float()
    inherit_cache = True
    name = "percentile_cont"
    # The fraction is rendered into the SQL, so it must be part of the statement cache key.
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("fraction", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, column: ColumnElement, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("a percentile fraction lies between 0 and 1")
        self.fraction = float(fraction)
        super().__init__(column)


class rollup_count(FunctionElement):
    """A count partial computed from spans, of the rollup count columns' own type, so it
    unions with rollup rows: `type_` (the column's type in `storage/schema.py`) here, the span
    store's unsigned sums there (no signed type unites with them)."""

    inherit_cache = True
    name = "rollup_count"
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(self, value: ColumnElement, type_) -> None:
        self.type = type_
        super().__init__(value)


@compiles(rollup_count)
def _rollup_count(element, compiler, **kw):
    return compiler.process(cast(element.clauses.clauses[0], element.type), **kw)


class bin_map(FunctionElement):
    """Aggregate: a group's latency bins (`latency_bin` of each span, NULL skipped) as a map
    bin -> count: what the ClickHouse span store's rollups keep (`latency_bins`,
    storage/clickhouse/layout.py), so raw edges merge with rollup rows. Only that store
    compiles it (`Store.rollup_bin_maps`); the others keep the packed sketch."""

    inherit_cache = True
    name = "bin_map"


class actor_pairs(FunctionElement):
    """A span's user and session as two rows, each a tuple (kind, actor) with kind 'user' or
    'session' (the actor NULL where the span has none): the distinct actors' edges read their
    spans once (`Store.reads_actors_once`, rollups/actors.py). Only the span store compiles
    it (an `arrayJoin`)."""

    inherit_cache = True
    name = "actor_pairs"


class bin_map_pairs(FunctionElement):
    """Aggregate: a group's bin maps merged (`bin_map`, or a rollup's column), its (bin, count)
    pairs in ascending bin order as one hexadecimal text, each pair a little-endian 16-bit bin
    then 64-bit count (`metrics/rollup_bins.merged_bins` reads it). One text per row, not two
    integer arrays: the driver and polars built the arrays element by element. `totals`: each
    group is a whole range's total (no buckets, no group-by), so few groups of many rows."""

    inherit_cache = True
    name = "bin_map_pairs"
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("totals", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, column: ColumnElement, totals: bool = False) -> None:
        self.totals = bool(totals)
        super().__init__(column)


class time_bucket(FunctionElement):
    """Start of the fixed-width bucket (in seconds, aligned to the epoch) holding a timestamp."""

    type = UtcDateTime()
    inherit_cache = True
    name = "time_bucket"
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("seconds", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, column: ColumnElement, seconds: int) -> None:
        self.seconds = int(seconds)
        super().__init__(column)


class zoned_bucket(FunctionElement):
    """Start of the bucket of a zone's wall clock (a local day, ISO week, hour or minutes) holding
    a timestamp, for the buckets of one query range (`base.zones.Bucketing`): a store with a
    zone database computes it there, one without compares with the range's edges."""

    type = UtcDateTime()
    inherit_cache = True
    name = "zoned_bucket"
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("bucketing", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, column: ColumnElement, bucketing: Bucketing) -> None:
        self.bucketing = bucketing
        super().__init__(column)


def bucket_of(column: ColumnElement, bucketing: Bucketing) -> ColumnElement:
    """The bucket start of `column` under `bucketing`: plain arithmetic when its edges are the
    UTC grid (every bucket in UTC, hours in whole-hour zones), else `zoned_bucket`."""
    if bucketing.uniform:
        return time_bucket(column, bucketing.seconds)
    return zoned_bucket(column, bucketing)


class stddev_samp(FunctionElement):
    """Sample standard deviation (NULL below two values), the same on every store."""

    type = Float()
    inherit_cache = True
    name = "stddev_samp"


class json_array_contains(FunctionElement):
    """True when a JSON array column holds `value` (a string)."""

    type = Boolean()
    inherit_cache = True
    name = "json_array_contains"

    def __init__(self, column: ColumnElement, value: str) -> None:
        super().__init__(column, literal(value, String()))


class json_object_text(FunctionElement):
    """The text of one top-level key of a JSON object column (any key, quotes included; a
    key given as SQL, e.g. a constant for a group-by, is used as it is)."""

    type = String()
    inherit_cache = True
    name = "json_object_text"

    def __init__(self, column: ColumnElement, key: str | ColumnElement) -> None:
        super().__init__(column, literal(key, String()) if isinstance(key, str) else key)


class json_tag_value(FunctionElement):
    """The text after "<key>:" in the first string of a JSON array column that starts so
    (tags "customer:acme" read as customer = acme), NULL when none does. The key is written
    into the SQL (a group-by names it in SELECT and GROUP BY alike): only keys matching
    `semantic.field_lookups.KEY_PATTERN` are accepted."""

    type = String()
    inherit_cache = True
    name = "json_tag_value"
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("key", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, column: ColumnElement, key: str) -> None:
        if not KEY_PATTERN.match(key):
            raise ValueError(f"tag key {key!r}: {KEY_HINT}")
        self.key = key
        super().__init__(column)

    @property
    def prefix(self) -> str:
        """The tag's prefix as a SQL string constant (the key is plain, by the pattern)."""
        return f"'{self.key}:'"


# How a group-by reads one key of a keyed JSON field (`semantic.field_lookups.keyed_field`).
KEY_SQL[KeyKind.TAG] = json_tag_value


def _object_key(column: ColumnElement, key: str) -> json_object_text:
    if not KEY_PATTERN.match(key):
        raise ValueError(f"metadata key {key!r}: {KEY_HINT}")
    return json_object_text(column, literal_column(f"'{key}'", String()))


KEY_SQL[KeyKind.OBJECT] = _object_key


class text_search(FunctionElement):
    """Case-insensitive substring search over input and output text, through an index.

    `dialect` names the store (`store_for(bind).name`), which writes the needle so that the
    user's text is matched literally (`Store.search_needle`).
    """

    type = Boolean()
    inherit_cache = True
    name = "text_search"

    def __init__(self, id_column, input_column, output_column, query: str, dialect: str) -> None:
        needle = store_for(dialect).search_needle(query)
        super().__init__(id_column, input_column, output_column, literal(needle, String()))


class latency_bin(FunctionElement):
    """The latency sketch bin of a duration in ms (see storage/latency_bins.py for the bins)."""

    type = Integer()
    inherit_cache = True
    name = "latency_bin"


class least_of(FunctionElement):
    """The smaller of two values, ignoring a NULL (SQLite's scalar min() would return NULL)."""

    type = Float()
    inherit_cache = True
    name = "least_of"


class greatest_of(FunctionElement):
    """The larger of two values, ignoring a NULL."""

    type = Float()
    inherit_cache = True
    name = "greatest_of"


class epoch_us(FunctionElement):
    """A timestamp as integer microseconds since the epoch: a column polars converts in one
    step, where per-value datetime objects cost ~6 us each to build and normalise."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_us"


class nano_dollars(FunctionElement):
    """A cost rounded to whole nano-dollars: a sort key one trace keeps whichever order its
    costs were added in (a float sum moves in its last bits with the order; traces mode pages
    by it, `traces/tree_ranking._rank`)."""

    type = Float()
    inherit_cache = True
    name = "nano_dollars"


class arrival_order(FunctionElement):
    """Which spans were written by when, for a page's pin: `spans.id` (given as the argument)
    where ids grow with each insert; the write's version on a store without such ids
    (storage/stores/clickhouse.py)."""

    type = BigInteger()
    inherit_cache = True
    name = "arrival_order"


# Every construct above: each store must compile all of them (tests/storage/test_stores.py).
NEUTRAL_CONSTRUCTS = (
    nano_dollars,
    percentile_cont,
    time_bucket,
    zoned_bucket,
    stddev_samp,
    json_array_contains,
    json_object_text,
    json_tag_value,
    text_search,
    latency_bin,
    least_of,
    greatest_of,
    epoch_us,
    arrival_order,
)


def upsert(conn: Connection, table: Table):
    """INSERT ... ON CONFLICT for the connection's database (rollups add into existing rows)."""
    return store_for(conn).insert(table)


def insert_ignoring_duplicates(conn: Connection, table: Table):
    """An INSERT that skips rows whose unique key exists, so re-sent spans never duplicate."""
    return upsert(conn, table).on_conflict_do_nothing()


# Any fixed number: the lock only has to be the same one in every writer process.
_ROLLUP_LOCK = 7_411_001


def serialize_rollup_writes(conn: Connection) -> None:
    """Writers fold into shared rollup rows in no fixed order, so two concurrent writers could
    deadlock; they take turns for the fold (until commit)."""
    store_for(conn).xact_lock(conn, _ROLLUP_LOCK)


def try_lock(conn: Connection, key: int) -> bool:
    """Take a session lock so only one process does a periodic job at a time."""
    return store_for(conn).try_lock(conn, key)


def unlock(conn: Connection, key: int) -> None:
    store_for(conn).unlock(conn, key)
