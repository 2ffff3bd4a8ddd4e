"""The ClickHouse tables' columns, derived from the declarations the other stores use.

Spans take their columns from `storage/schema.py`'s `spans` (every column but the generated
id), typed for ClickHouse here; the skip indexes follow the filters declared in
`semantic/fields.py` (bloom filters for the id and actor look-ups, n-gram filters for the text
search, min-max for the ranges); the rollups take their keys from `ROLLUP_DIMENSIONS` and their
partials from the metric declarations (`semantic/metrics.py`), compiled to ClickHouse SQL by
the driver's SQLAlchemy dialect. A field, a dimension or a metric added there reaches these
tables without a list to copy here (a new rollup column still needs a migration: `ddl.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.semantic.field_declaration import FilterKind
from observatory_core.semantic.fields import FIELDS
from observatory_core.semantic.metrics import (
    MEASURE_PARTS,
    rollup_counts,
    rollup_measures,
    sketched,
)
from observatory_core.storage.dialect import bin_map, latency_bin
from observatory_core.storage.schema import ROLLUP_DIMENSIONS, ROLLUP_GRAINS, spans
from observatory_core.storage.types import UtcDateTime

DIALECT_NAME = "clickhousedb"  # clickhouse-connect's SQLAlchemy dialect
TIME = "DateTime64(6, 'UTC')"  # microseconds, as `UtcDateTime` keeps them elsewhere


def micro_text(value: datetime) -> str:
    """A time as the engine reads a `TIME` parameter (the driver's own binding drops the
    microseconds)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def bound_time(name: str) -> str:
    """The parameter `name` (a `micro_text`) as the span table's time type: microseconds kept."""
    return f"toDateTime64(%({name})s, 6, 'UTC')"


# How long a wrapper move's journal rows are kept (`wrapper_move_journal.py`): a move left
# pending that long by an org that wrote nothing since is dropped
JOURNAL_DAYS = 30
# When they are deleted: the table's TTL, and what its reads leave out (`> now()`)
JOURNAL_EXPIRES = f"toDateTime(begun_at) + INTERVAL {JOURNAL_DAYS} DAY"
BUCKET = "DateTime('UTC')"  # a rollup bucket starts on a whole minute
# Columns with few distinct values: dictionary-encoded, smaller and faster to filter and group.
LOW_CARDINALITY = frozenset(
    {
        "provider",
        "model",
        "environment",
        "operation",
        "status",
        "cost_source",
        "service_name",
        "finish_reason",
        "scope_name",
        "error_type",
    }
)
# Added to the span row by this store: the write's version (microseconds since the epoch; the
# ReplacingMergeTree keeps the highest, reads take one row per span) and the retention hook
# (days this span is kept, 0: forever; the table's TTL deletes it after).
VERSION, RETAIN_DAYS = "version", "retain_days"
# The span's id on this store (the other stores' generated `spans.id`): its identity hashed,
# halved to fit a signed 64-bit integer; stored since schema version 8 (`ddl._span_ids`).
SPAN_ID_SQL = "intDiv(cityHash64({t}org_id, {t}trace_id, {t}span_id), 2)"
SPAN_ID_COLUMN = f"`id` UInt64 MATERIALIZED {SPAN_ID_SQL.format(t='')}"
# The TTL (`toDateTime(start_time) + toIntervalDay(retain_days)`) is a DateTime, which ends in
# 2106: past it the sum wraps round to a past date, and the span would be deleted at once (a
# retention of 36,500 days, which the settings accept, deleted every span of an org in review).
# A retention longer than this is stamped 0, kept until deleted, which is what it means.
MAX_TTL_DAYS = 20_000


def ttl_days(days: int | None) -> int:
    """The days a span's TTL hook holds for a retention of `days` (None or 0: kept)."""
    d = int(days or 0)
    return 0 if d > MAX_TTL_DAYS else d


# The trace totals' stamp (schema version 6) for a span kept forever: the largest UInt16, so
# `max` over a trace's spans lets forever win (a trace with a span at 0 and one at 30 days is
# kept while the forever span is), and their TTL, on 1 to `MAX_TTL_DAYS` only, never deletes
# it (65535 days added to a DateTime wraps round past 2106: to 2070 for a trace of 2026, seen
# on chDB, so the row would go then, not never). 0 there: a row
# written before version 6, not stamped yet, kept too.
FOREVER_DAYS = 65_535


def total_days(days: int | None) -> int:
    """The trace totals' stamp for spans stamped `ttl_days(days)`: 0 (forever) as
    `FOREVER_DAYS`."""
    d = ttl_days(days)
    return d or FOREVER_DAYS


def total_days_sql(span_days: str) -> str:
    """`total_days` in SQL, of a span's stamp `span_days` (an expression)."""
    return f"if({span_days} = 0, toUInt16({FOREVER_DAYS}), toUInt16({span_days}))"


# JSON objects kept as their text (String): written as text, read back as objects.
JSON_TEXT = ("metadata", "attributes")


@dataclass(frozen=True)
class ChColumn:
    name: str
    type: str
    codec: str | None = None
    default: str | None = None

    def ddl(self) -> str:
        out = f"`{self.name}` {self.type}"
        if self.default is not None:
            out += f" DEFAULT {self.default}"
        if self.codec:
            out += f" CODEC({self.codec})"
        return out


# -- spans -----------------------------------------------------------------------------------


def _tags_columns() -> frozenset[str]:
    """JSON arrays of strings filtered by any/all of their values: native arrays here."""
    return frozenset(f.name for f in FIELDS.values() if f.filter is FilterKind.TAGS and f.plain)


def _span_column(col) -> ChColumn:
    kind = col.type
    name = col.name
    if isinstance(kind, UtcDateTime):
        return ChColumn(name, _nullable(TIME, col.nullable), "Delta, ZSTD(1)")
    if isinstance(kind, JSON):
        if name in _tags_columns():
            return ChColumn(name, "Array(LowCardinality(String))", "ZSTD(1)")
        return ChColumn(name, "String", "ZSTD(3)")  # JSON text, long and repetitive
    if isinstance(kind, Boolean):
        return ChColumn(name, "Bool")
    if isinstance(kind, BigInteger):
        return ChColumn(name, _nullable("Int64", col.nullable))
    if isinstance(kind, Integer):
        return ChColumn(name, _nullable("Int32", col.nullable))
    if isinstance(kind, Float):
        return ChColumn(name, _nullable("Float64", col.nullable))
    if isinstance(kind, String):  # String(n) and Text
        base = _nullable("String", col.nullable)
        if name in LOW_CARDINALITY:
            return ChColumn(name, f"LowCardinality({base})")
        long_text = getattr(kind, "length", None) is None
        return ChColumn(name, base, "ZSTD(3)" if long_text else "ZSTD(1)")
    raise TypeError(f"spans.{name}: no ClickHouse type for {kind!r}; add one in layout.py")


def _nullable(base: str, nullable: bool | None) -> str:
    return f"Nullable({base})" if nullable else base


@lru_cache(maxsize=1)
def span_columns() -> tuple[ChColumn, ...]:
    """The spans table's columns: `storage/schema.py`'s spans but the id, then this store's."""
    stored = tuple(_span_column(c) for c in spans.columns if c.name != "id")
    return (
        *stored,
        ChColumn(VERSION, "UInt64", "Delta, ZSTD(1)"),
        ChColumn(RETAIN_DAYS, "UInt16", default="0"),
    )


def span_column_names() -> tuple[str, ...]:
    return tuple(c.name for c in span_columns())


@dataclass(frozen=True)
class SkipIndex:
    name: str
    expression: str
    type: str
    granularity: int = 1

    def ddl(self) -> str:
        return (
            f"INDEX {self.name} {self.expression} TYPE {self.type} GRANULARITY {self.granularity}"
        )


def search_expression(column: str) -> str:
    """What the text-search index holds and a search must compare: the lower-cased text
    ('' for none: n-gram indexes take no NULLs)."""
    return f"lower(ifNull(`{column}`, ''))"


def skip_indexes() -> tuple[SkipIndex, ...]:
    """From the filter declarations: a bloom filter per id or actor look-up (an in-list filter
    of a plain text field the rollups do not carry: trace, span, user, session ids), one on
    tags, an n-gram filter per column the text search reads, min-max per range filter; and a
    token filter on the metadata JSON for its key=value filter."""
    out: list[SkipIndex] = []
    for f in FIELDS.values():
        if not f.plain or f.name not in spans.c:
            continue
        if f.filter is FilterKind.IN_LIST and f.type == "text" and not f.rollup:
            out.append(SkipIndex(f"idx_{f.name}", f"`{f.name}`", "bloom_filter(0.001)"))
        elif f.filter is FilterKind.TAGS:
            out.append(SkipIndex(f"idx_{f.name}", f"`{f.name}`", "bloom_filter(0.01)"))
        elif f.filter is FilterKind.SEARCH:
            for column in f.filter_reads():
                out.append(
                    SkipIndex(
                        f"idx_{column}_ngrams",
                        search_expression(column),
                        "ngrambf_v1(3, 65536, 2, 0)",
                    )
                )
        elif f.filter is FilterKind.RANGE:
            out.append(SkipIndex(f"idx_{f.name}", f"`{f.name}`", "minmax", 4))
        elif f.filter is FilterKind.METADATA:
            out.append(SkipIndex(f"idx_{f.name}", f"`{f.name}`", "tokenbf_v1(32768, 3, 0)"))
    return tuple(out)


# -- SQL from the declarations ----------------------------------------------------------------


@compiles(Float, DIALECT_NAME)
def _float64(element, compiler, **kw):
    """SQLAlchemy's true division casts to FLOAT, which ClickHouse reads as Float32."""
    return "Float64"


def sql(expression: ColumnElement) -> str:
    """A declaration's expression over `spans.c` as ClickHouse SQL, constants inlined (the
    statements it goes into are DDL: nothing is bound); the neutral constructs as the span
    store compiles them for its reads (storage/stores/clickhouse.py)."""
    from clickhouse_connect.cc_sqlalchemy.dialect import ClickHouseDialect

    import observatory_core.storage.stores.clickhouse  # noqa: F401  (registers the constructs)

    return str(
        expression.compile(dialect=ClickHouseDialect(), compile_kwargs={"literal_binds": True})
    )


# -- rollups ---------------------------------------------------------------------------------

SUM_COUNT = "SimpleAggregateFunction(sum, UInt64)"
# A UInt64 count adds round this: a move's opposite row holds 2**64 - c, which a merge adds as -c.
UINT64_WRAP = 2**64
SUM_FLOAT = "SimpleAggregateFunction(sum, Float64)"
# Schema versions 1-2 only (ddl.py never edits a released version): a t-digest state of the
# sketched measure, whose percentiles over few spans were far off (docs/span-store-internals.md).
# Version 3 replaces it with the latency bins every store keeps.
DIGEST = "AggregateFunction(quantileTDigest, Float64)"
# From version 3: the latency sketch's bins (storage/latency_bins.py) as a map bin -> count,
# added bin by bin when parts merge; the other stores keep the same bins packed in bytes.
BINS_COLUMN = "latency_bins"
BINS_TYPE = "SimpleAggregateFunction(sumMap, Map(UInt16, UInt64))"


def digest_column(measure: str) -> str:
    """The quantile state versions 1-2 kept of a sketched measure."""
    return f"{measure}_digest"


def merged(column: ChColumn, source: str = "rows") -> str:
    """The aggregate that folds rows of a finer rollup's `column` into a coarser one."""
    if column.type == DIGEST:
        return f"quantileTDigestMergeState({source}.{column.name})"
    function = column.type.removeprefix("SimpleAggregateFunction(").split(",")[0]
    if function not in ("sum", "min", "max", "sumMap"):
        raise TypeError(f"{column.name}: no merge for {column.type}; add one in layout.py")
    return f"{function}({source}.{column.name})"


@dataclass(frozen=True)
class Partial:
    """A rollup column and how the materialized view fills it from a group of spans."""

    column: ChColumn
    select: str


def _dimension(name: str) -> tuple[ChColumn, str]:
    """A rollup key from the span column of the same name; NULL kept as '' (as elsewhere)."""
    source = _span_column(spans.c[name])
    base = source.type.removeprefix("LowCardinality(").removeprefix("Nullable(").rstrip(")")
    typed = f"LowCardinality({base})" if name in LOW_CARDINALITY else base
    expression = f"ifNull(spans.`{name}`, '')" if spans.c[name].nullable else f"spans.`{name}`"
    return ChColumn(name, typed), expression


def rollup_keys() -> tuple[tuple[ChColumn, str], ...]:
    """(column, its expression over spans) for each of `ROLLUP_DIMENSIONS`."""
    return tuple(_dimension(name) for name in ROLLUP_DIMENSIONS)


def bins_partial() -> Partial:
    """The latency bins of a group of spans, a map bin -> count: the bin is `latency_bin` of
    the sketched measure, compiled as every read on this store compiles it, so raw edges and
    rollup rows hold the same bins, and the bins are those of storage/latency_bins.py."""
    value = sketched().expression(spans.c)
    return Partial(ChColumn(BINS_COLUMN, BINS_TYPE), sql(bin_map(latency_bin(value))))


def rollup_partials(*, bins: bool = True) -> tuple[Partial, ...]:
    """The count columns (`rollup_counts`), each measure's `MEASURE_PARTS` (`rollup_measures`)
    and the latency bins (`bins`: schema version 3 on; False: versions 1-2's t-digest state of
    the sketched measure in their place), with their aggregates over spans."""
    out: list[Partial] = []
    for column, metric in rollup_counts().items():
        agg = (
            "count()"
            if metric.expression is None
            else f"countIf({sql(metric.expression(spans.c))})"
        )
        out.append(Partial(ChColumn(column, SUM_COUNT), agg))
    for measure, metric in rollup_measures().items():
        x = sql(metric.expression(spans.c))
        value = f"toFloat64(ifNull({x}, 0))"
        for part in MEASURE_PARTS:
            name = f"{measure}_{part}"
            if part == "count":
                out.append(Partial(ChColumn(name, SUM_COUNT), f"countIf(({x}) IS NOT NULL)"))
            elif part == "sum":
                out.append(Partial(ChColumn(name, SUM_FLOAT), f"sum({value})"))
            elif part == "sumsq":
                out.append(Partial(ChColumn(name, SUM_FLOAT), f"sum({value} * {value})"))
            else:  # min, max: NULL when no span of the group has a value
                kind = f"SimpleAggregateFunction({part}, Nullable(Float64))"
                out.append(
                    Partial(ChColumn(name, kind), f"{part}(CAST(({x}), 'Nullable(Float64)'))")
                )
        if metric.rollup.sketch and not bins:
            out.append(
                Partial(
                    ChColumn(digest_column(measure), DIGEST),
                    f"quantileTDigestStateIf({value}, ({x}) IS NOT NULL)",
                )
            )
    if bins:
        out.append(bins_partial())
    return tuple(out)


GRAIN_SECONDS = ROLLUP_GRAINS  # rollup_1min, rollup_1hour, rollup_1day


# -- trace totals ----------------------------------------------------------------------------


def trace_total_partials(*, versions: bool = True, retention: bool = True) -> tuple[Partial, ...]:
    """Per (org, project, trace): what `trace_totals` keeps elsewhere, summed as spans arrive.
    The error count is the `error_count` rollup count's condition; the root is the span
    without a parent ('' until it arrives). `versions` (schema version 4 on): the newest write
    and the root's write (`version_partials`); `retention` (version 6 on): the spans' largest
    retention days (`trace_retention_partial`)."""
    error = rollup_counts()["error_count"].expression(spans.c)
    return (
        (
            Partial(ChColumn("span_count", SUM_COUNT), "count()"),
            Partial(ChColumn("error_count", SUM_COUNT), f"countIf({sql(error)})"),
            Partial(ChColumn("total_cost_usd", SUM_FLOAT), "sum(spans.total_cost_usd)"),
            Partial(
                ChColumn("total_tokens", "SimpleAggregateFunction(sum, Int64)"),
                "sum(toInt64(spans.total_tokens))",
            ),
            Partial(
                ChColumn("first_start", f"SimpleAggregateFunction(min, {TIME})"),
                "min(spans.start_time)",
            ),
            Partial(
                ChColumn("last_start", f"SimpleAggregateFunction(max, {TIME})"),
                "max(spans.start_time)",
            ),
            Partial(
                ChColumn("last_end", f"SimpleAggregateFunction(max, {TIME})"), "max(spans.end_time)"
            ),
            Partial(
                ChColumn("root_span_id", "SimpleAggregateFunction(max, String)"),
                "max(if(spans.parent_span_id IS NULL, spans.span_id, ''))",
            ),
        )
        + (version_partials() if versions else ())
        + ((trace_retention_partial(),) if retention else ())
    )


def trace_retention_partial() -> Partial:
    """The largest `retain_days` of a partial row's spans (schema version 6), a span kept
    forever (0) counted as `FOREVER_DAYS` so it wins: the trace totals' TTL deletes the row
    that many days after its last span started, once the spans' TTL has deleted every span it
    counts; `FOREVER_DAYS`, or 0 (rows written before version 6, until re-stamped): kept."""
    return Partial(
        ChColumn(RETAIN_DAYS, "SimpleAggregateFunction(max, UInt16)", default="0"),
        f"max({total_days_sql(f'spans.{RETAIN_DAYS}')})",
    )


def trace_totals_ttl() -> str:
    """The trace totals' TTL (schema version 6): as the spans' own (`ddl._spans`), on the
    stamps of 1 to `MAX_TTL_DAYS` days only (0 and `FOREVER_DAYS`: kept)."""
    return (
        f"toDateTime(last_start) + toIntervalDay({RETAIN_DAYS}) "
        f"WHERE {RETAIN_DAYS} BETWEEN 1 AND {MAX_TTL_DAYS}"
    )


NO_ROOT_YET = 2**64 - 1  # `root_version` of rows without the root: after every pin


def version_partials() -> tuple[Partial, ...]:
    """When a trace's spans were written (schema version 4): the newest `version` counted in,
    and the root's first (`NO_ROOT_YET` without it; rows written before version 4 read 0,
    older than any pin, when they hold the root, else `NO_ROOT_YET`: the column's default,
    so a trace whose root had not arrived by then is not listed as if it had). A page pinned before a trace grew recomputes its totals from its
    spans under the pin, and lists a trace only once its root had arrived by the pin
    (`traces/tree_ranking.py`), as `max_span_id` and `root_id` serve elsewhere."""
    return (
        Partial(
            ChColumn("max_version", "SimpleAggregateFunction(max, UInt64)"),
            f"max(spans.{VERSION})",
        ),
        Partial(
            ChColumn(
                "root_version",
                "SimpleAggregateFunction(min, UInt64)",
                default=f"if(root_span_id = '', {NO_ROOT_YET}, 0)",
            ),
            f"min(if(spans.parent_span_id IS NULL, spans.{VERSION}, {NO_ROOT_YET}))",
        ),
    )
