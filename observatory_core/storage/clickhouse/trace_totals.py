"""`trace_totals` as the query builders read it (`storage/schema.py`), from this store's own
table (`ddl.py`): one row per (org, project, trace), summed when read.

The engine's table holds partial rows (`SimpleAggregateFunction`s, one per insert until parts
merge), so every SELECT over `trace_totals` reads a derived table of the same name that groups
them (never `FINAL`), and derives the columns the other stores keep:

- `root_id`: the root's `spans.id` as this store computes it (a hash of the span's identity,
  `storage/stores/clickhouse.py`), NULL until the root has arrived in this project;
- `max_span_id`: the newest write counted in (its `version`, schema version 4), the unit a
  page's pin is in here (`arrival_order`); `root_version`, the root's first write (NULL
  until it arrives), is what `arrival_order(trace_totals.c.root_id)` reads;
- `shared`: whether the trace has spans in another project.

Only conditions on the org and the trace (and subqueries that read no outer row) go inside,
before the rows are summed: every partial row of a trace shares them. A project condition is
applied outside, so `shared` still sees the trace's other projects, as elsewhere.

A bound on a summed time (`first_start`, a minimum; `last_start`, `last_end`, maxima) is
applied outside too, and also narrows the traces inside (`traces_within`): a (project, trace)
whose `min(first_start)` is before a time has a partial row before it, whose minimum is at or
after it has every row at or after it, and so on; either way the trace (its rows in every
project) has a row on that side, which `max(...)` (for `>=`, `>`) or `min(...)` (for `<`,
`<=`) over its rows tells. Each bound is a necessary condition on its own, so the traces kept
are a superset of those that pass and the sums are untouched. The Overview's trace counts at
1M spans grouped every trace of the org otherwise (docs/span-store-internals.md, "Traces mode").
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    cast,
    func,
    literal_column,
    select,
)
from sqlalchemy.sql import Select, operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter
from sqlalchemy.sql.expression import ColumnClause
from sqlalchemy.sql.selectable import FromClause, ScalarSelect

from observatory_core.storage.clickhouse.layout import NO_ROOT_YET, SPAN_ID_SQL
from observatory_core.storage.schema import trace_totals

# The table's partial rows as stored, not summed (no derived table: `_table` in
# `storage/stores/clickhouse.py` reads only the `trace_totals` of `storage/schema.py` so). A
# query that adds up a trace's rows in every project itself (`metrics/trace_path.py`,
# `every_trace`) reads them: the sums, minima and maxima of the partial rows are those of the
# summed rows, and grouping once by trace rather than twice (by project, then by trace, with
# `shared`'s window) took the Overview's trace count at 1M spans from about 85 to about 40 ms
# a period (docs/span-store-internals.md, "Reports and alerts").
partial_rows = Table(
    "trace_totals",
    MetaData(),
    Column("org_id", Integer),
    Column("project_id", Integer),
    Column("trace_id", String),
    Column("span_count", BigInteger),
    Column("error_count", BigInteger),
    Column("total_cost_usd", Float),
    Column("total_tokens", BigInteger),
    Column("first_start", DateTime(timezone=True)),
    Column("last_start", DateTime(timezone=True)),
    Column("last_end", DateTime(timezone=True)),
    Column("root_span_id", String),  # '' in a row without the root
    Column("max_version", BigInteger),
    Column("root_version", BigInteger),
)


def _latest_root() -> str:
    """Over a trace's partial rows (grouped by org and trace): (first root write, hashed root
    id) of the project whose first root write is the latest (ties: the greater id). Each
    project's first root write is the least `root_version` of its rows and its root the
    greatest `root_span_id`, as the derived table has them per project (`derived`); a project
    without a root holds ''. `minMap` and `maxMap` keep every project, in the same order."""
    hashed = SPAN_ID_SQL.format(t="").replace("span_id", "r.2")
    per_project = (
        "arrayZip(minMap([project_id], [root_version]).2, maxMap([project_id], [root_span_id]).2)"
    )
    return f"arrayMax(arrayMap(r -> (r.1, {hashed}), arrayFilter(r -> r.2 != '', {per_project})))"


# `summed_per_trace(..., root_rows=True)`'s column: a trace's rows that hold a root
ROOT_ROWS = "root_rows"


def latest_root_of(source: str) -> str:
    """`_latest_root` from `source`'s `ROOT_ROWS` (a row of `summed_per_trace(...,
    root_rows=True)` named `source`): the same (first root write, hashed root id) tuple. Only
    the rows holding a root are there; the others' '' and `NO_ROOT_YET` change no project's
    greatest root id or least root write, and a project without a root is in neither."""
    rows = f"{source}.{ROOT_ROWS}"
    hashed = SPAN_ID_SQL.format(t=f"{source}.").replace(f"{source}.span_id", "r.2")

    def per_project(reduce: str, part: int) -> str:
        keys, values = f"arrayMap(x -> [x.1], {rows})", f"arrayMap(x -> [x.{part}], {rows})"
        return f"arrayReduce('{reduce}', {keys}, {values}).2"

    pairs = f"arrayZip({per_project('minMap', 2)}, {per_project('maxMap', 3)})"
    return f"arrayMax(arrayMap(r -> (r.1, {hashed}), {pairs}))"


def roots_arrived_by(source: str, pin: int) -> str:
    """Whether the root of each project in `source`'s `ROOT_ROWS` had arrived by `pin` (a
    version): its least root write is at or before it, as `root_arrival <= pin` reads the
    latest of those (`_latest_root`), without the per-project maps."""
    rows = f"{source}.{ROOT_ROWS}"
    arrived = f"arrayMap(y -> y.1, arrayFilter(y -> y.2 <= {int(pin)}, {rows}))"
    return f"arrayAll(x -> has({arrived}, x.1), {rows})"


def summed_per_trace(
    where: list, traces: Select | None = None, *, root_rows: bool = False
) -> Select:
    """Per trace, its partial rows that pass `where` (conditions on `partial_rows`), of the
    traces `traces` selects (their ids; None: every trace), added up in one grouping, with
    the columns `traces/trace_lists.summed_totals` gives from the derived table (which groups
    by project, adds `shared`'s window, then groups by trace): the explorer's traces by a tree
    total at 1M spans spent most of their ranking statement there (docs/span-store-internals.md,
    "Traces mode"). `root_arrival` is the latest of each project's first root write and `root_id`
    that project's root (its greatest root span id, hashed), as the other stores list a trace with
    roots in several projects (the project whose root arrived last; a trace listed once every
    project's root had arrived by the pin): per project by `minMap` and `maxMap` over the trace's
    rows (`_latest_root`), not by a second grouping. `root_rows`: instead of those two, the
    org and the rows that hold a root, (project, first root write, root span id) each, as
    `ROOT_ROWS`: the root read from them (`latest_root_of`) for the few traces ranked first
    only (`traces/tree_ranking.py`, a first page)."""
    t = partial_rows.c
    latest = _latest_root()
    if traces is not None:
        # `identity`: the set is not used on the sorting key, where a window's few thousand
        # random trace ids skip a few granules of the org's rows for a key analysis that cost
        # more than it saved (docs/span-store-internals.md, "Traces mode")
        where = [*where, func.identity(t.trace_id).in_(traces)]
    roots = [
        literal_column(f"if(max(root_span_id) = '', NULL, {latest}.2)").label("root_id"),
        literal_column(f"if(max(root_span_id) = '', NULL, {latest}.1)").label("root_arrival"),
    ]
    if root_rows:
        held = func.tuple(t.project_id, t.root_version, t.root_span_id)
        roots = [t.org_id, func.groupArrayIf(held, t.root_span_id != "").label(ROOT_ROWS)]
    return (
        select(
            t.trace_id,
            *roots,
            func.sum(t.total_cost_usd).label("total_cost_usd"),
            cast(func.sum(t.total_tokens), BigInteger).label("total_tokens"),
            cast(func.sum(t.span_count), BigInteger).label("span_count"),
            cast(func.sum(t.error_count), BigInteger).label("error_count"),
            func.max(t.max_version).label("newest"),
            func.min(t.first_start).label("first_start"),
            func.max(t.last_end).label("last_end"),
        )
        .where(*where)
        .group_by(t.org_id, t.trace_id)
    )


# The columns every partial row of a trace holds alike and `shared` does not depend on.
KEY = frozenset({"org_id", "trace_id"})
# What `arrival_order(trace_totals.c.<column>)` reads here (`storage/stores/clickhouse.py`).
ARRIVAL = {"root_id": "root_version", "max_span_id": "max_span_id"}


def self_contained(clause) -> bool:
    """Whether a subquery reads no outer row (it is not correlated), so it may be moved inside
    a derived table: each of its SELECTs reads one FROM (never correlated away: SQLAlchemy keeps
    a subquery's last FROM), which holds every table its columns and conditions name, and none
    is told to correlate. Nested subqueries are judged alike; too strict is only slower."""
    element = clause.element if isinstance(clause, ScalarSelect) else clause
    if not isinstance(element, Select):
        return False
    for e in visitors.iterate(element):
        if not isinstance(e, Select):
            continue
        froms = set(e._from_obj) | set(e.columns_clause_froms)
        if e._correlate or e._correlate_except or len(froms) != 1:
            return False
        (source,) = froms
        own = {f for f in visitors.iterate(source) if isinstance(f, FromClause)} | {source}
        named = [*e.selected_columns]
        if e.whereclause is not None:
            named.append(e.whereclause)
        for part in named:
            for c in visitors.iterate(part):
                table = getattr(c, "table", None) if isinstance(c, ColumnClause) else None
                if table is not None and table not in own and _outside(c, part):
                    return False
    return True


def _outside(column, part) -> bool:
    """Whether `column` is named by `part` itself rather than by a subquery inside it (which
    is judged on its own)."""
    inner = [e for e in visitors.iterate(part) if isinstance(e, Select)]
    return not any(column in set(visitors.iterate(s)) for s in inner)


def on_key(clause, source=trace_totals) -> bool:
    """Whether a condition on `trace_totals` (or `source`, an alias of it) may be applied to its
    partial rows before they are summed: it reads only `KEY` columns (and self-contained
    subqueries)."""
    if isinstance(clause, ScalarSelect | Select):
        return self_contained(clause)
    if isinstance(clause, ColumnClause):  # one without a table is text (`is_shared`): kept out
        return clause.table is source and clause.name in KEY
    return all(on_key(c, source) for c in clause.get_children())


# The derived table's times summed as a minimum or a maximum of the partial rows' (`derived`).
EXTREMES = frozenset({"first_start", "last_start", "last_end"})
_COMPARED = {operators.ge: ">=", operators.gt: ">", operators.lt: "<", operators.le: "<="}


def time_bounds(conjuncts: list, source=trace_totals) -> list[tuple[str, str, BindParameter]]:
    """The conjuncts `<summed time> <comparison> <bound value>` on `source`'s columns, as
    (column, operator, value)."""
    out = []
    for c in conjuncts:
        if not isinstance(c, BinaryExpression) or c.operator not in _COMPARED:
            continue
        left, right = c.left, c.right
        if (
            isinstance(left, ColumnClause)
            and getattr(left, "table", None) is source
            and left.name in EXTREMES
            and isinstance(right, BindParameter)
        ):
            out.append((left.name, _COMPARED[c.operator], right))
    return out


def traces_within(database: str, name: str, inner: list[str], bounds: list) -> str:
    """The traces (among the rows `inner` keeps) with a partial row on the right side of each
    of `bounds` ((column, operator, compiled value)): a superset of the traces that pass them."""
    having = " AND ".join(
        f"{'max' if op in ('>=', '>') else 'min'}({name}.{column}) {op} {value}"
        for column, op, value in bounds
    )
    where = f" WHERE {' AND '.join(inner)}" if inner else ""
    return (
        f"{name}.trace_id IN (SELECT {name}.trace_id FROM {database}.trace_totals AS {name}"
        f"{where} GROUP BY {name}.trace_id HAVING {having})"
    )


def derived(database: str, inner: list[str], span_id_sql: str, name: str = "trace_totals") -> str:
    """The derived table's SQL (without its alias); `inner`: the compiled conditions applied
    before grouping, naming the table `name`; `span_id_sql`: the span id's expression, `{t}`
    for a column's prefix."""
    root = span_id_sql.format(t="").replace("span_id", "max(root_span_id)")
    where = f" WHERE {' AND '.join(inner)}" if inner else ""
    return (
        "(SELECT org_id, project_id, trace_id, "
        f"if(max(root_span_id) = '', NULL, {root}) AS root_id, "
        "sum(span_count) AS span_count, sum(error_count) AS error_count, "
        "sum(total_cost_usd) AS total_cost_usd, sum(total_tokens) AS total_tokens, "
        "max(max_version) AS max_span_id, "
        f"if(min(root_version) = {NO_ROOT_YET}, NULL, min(root_version)) AS root_version, "
        "min(first_start) AS first_start, max(last_start) AS last_start, "
        "max(last_end) AS last_end, "
        "count() OVER (PARTITION BY org_id, trace_id) > 1 AS shared "
        f"FROM {database}.trace_totals AS {name}{where} "
        "GROUP BY org_id, project_id, trace_id)"
    )


__all__ = [
    "ARRIVAL",
    "EXTREMES",
    "KEY",
    "ROOT_ROWS",
    "derived",
    "latest_root_of",
    "on_key",
    "partial_rows",
    "roots_arrived_by",
    "self_contained",
    "summed_per_trace",
    "time_bounds",
    "traces_within",
]
