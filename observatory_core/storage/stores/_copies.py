"""Which conditions a read of the span store's stored rows may apply alone, as if a span could
have several copies (`exports/span_store_pages.py`, `traces/root_stretches.py`).

Since schema version 7 each span is one stored row (`storage/clickhouse/fold_copies.py`,
docs/span-store-internals.md "Each span once"), and since version 8 `spans` compiles to the stored
table itself (`stores/clickhouse.py`, no derived table: `on_newest_copy` is then the condition as
written); the rule below for copies is kept by those raw readers, whose answers it leaves unchanged
when each span has one row."""

from __future__ import annotations

from sqlalchemy import Boolean
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Select, functions, operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList
from sqlalchemy.sql.expression import ColumnClause
from sqlalchemy.sql.selectable import CTE, ScalarSelect

from observatory_core.storage.clickhouse import trace_totals as totals
from observatory_core.storage.dialect import arrival_order, text_search
from observatory_core.storage.schema import spans

# The columns every copy of a span holds alike (its identity, time and scope) and `version`
# (which copies a page pins). A reader that may meet two rows of a span (the exports' windows
# over raw rows, the roots' stretches) applies only conditions on these to the rows as stored:
# one on anything a later copy may change (status, duration, text, twins) could pass an older
# copy the newest fails. The start time is the same in every copy since the write turns; copies
# writers raced in before them may hold two (docs/span-store-internals.md, "Each span once": spans
# mode lists such a span twice until the fold), and a bound that must not rely on it is marked
# `on_newest_copy`.
SAME_IN_EVERY_COPY = frozenset({"org_id", "project_id", "trace_id", "span_id", "start_time"})


class on_newest_copy(functions.FunctionElement):
    """A condition never counted as the same in every copy (`pushed_inside` is False for it),
    even when it reads only `SAME_IN_EVERY_COPY` columns: copies left by writers that raced
    before the write turns may hold two start times (docs/span-store-internals.md, "Each span
    once"). Written as the condition itself: since schema version 8 `spans` is the stored table, one
    row per span once folded, so no read picks a newest copy and the mark changes no SQL."""

    type = Boolean()
    inherit_cache = True
    name = "on_newest_copy"


@compiles(on_newest_copy)
def _on_newest_copy(element, compiler, **kw):
    (condition,) = element.clauses
    return f"({compiler.process(condition, **kw)})"


# Actor ids the layout gives a bloom filter: a CTE looking them up reads a few traces.
LOOKED_UP = frozenset({"user_id", "session_id"})


def reads_looked_up_ctes(clause) -> bool:
    """A subquery whose FROM is CTEs only, with no WHERE of its own (it cannot refer to the
    row), each CTE looking up users or sessions (a few traces)."""
    if isinstance(clause, ScalarSelect):
        clause = clause.element
    if not isinstance(clause, Select):
        return False
    froms = clause.columns_clause_froms
    plain = clause.whereclause is None and not clause._from_obj  # nothing else in its FROM
    return plain and bool(froms) and all(_looks_up(f) for f in froms)


def _looks_up(cte) -> bool:
    if not isinstance(cte, CTE) or not isinstance(cte.element, Select):
        return False
    where = cte.element.whereclause
    if where is None:
        return False
    conjuncts = where.clauses if isinstance(where, BooleanClauseList) else [where]
    return any(actor_lookup(c) for c in conjuncts)


def actor_lookup(clause) -> bool:
    """`spans.user_id = :x`, `spans.session_id IN (:xs)` and the like."""
    if not isinstance(clause, BinaryExpression):
        return False
    if clause.operator not in (operators.eq, operators.in_op):
        return False
    left = clause.left
    return (
        isinstance(left, ColumnClause)
        and getattr(left, "table", None) is spans
        and left.name in LOOKED_UP
        and isinstance(clause.right, BindParameter)
    )


def pushed_inside(clause, source=spans) -> bool:
    """Whether a condition holds alike for every copy of a span: it reads only columns every
    copy holds alike, or the pin (`arrival_order`, the version); never the id, a correlated
    subquery or another table's column. (Before schema version 8 these were the conditions
    applied before a newest-copy pick; `same_in_every_copy` is its one caller now.) `source`:
    `spans`, or an alias of it."""
    if isinstance(clause, on_newest_copy):
        return False
    if isinstance(clause, arrival_order):
        (column,) = clause.clauses
        return getattr(column, "table", None) is source
    if reads_looked_up_ctes(clause):
        return True
    if isinstance(clause, ScalarSelect):  # `trace_id IN (...)`: when it reads no outer row,
        # and not from a CTE of a whole window (the Sessions list's; the rule as it was when
        # these conditions went inside the derived table, before schema version 8)
        froms = clause.element.columns_clause_froms
        return not any(isinstance(f, CTE) for f in froms) and totals.self_contained(clause)
    if clause is source.c.id or isinstance(clause, Select | text_search):
        return False
    if isinstance(clause, ColumnClause) and getattr(clause, "table", None) is not None:
        return clause.table is source and clause.name in SAME_IN_EVERY_COPY
    return all(pushed_inside(c, source) for c in clause.get_children())


def same_in_every_copy(clause) -> bool:
    """Whether a condition holds alike for every copy of a span (`pushed_inside`) and reads
    no other table: one a read of the raw copies may apply (exports/span_store_pages.py)."""
    if any(isinstance(e, Select | ScalarSelect | CTE) for e in visitors.iterate(clause)):
        return False
    return pushed_inside(clause)
