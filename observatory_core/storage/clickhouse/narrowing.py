"""What the newest-copy derived table of `spans` (storage/stores/clickhouse.py) may also apply
before it picks each span's newest copy, so that it reads a few traces rather than the org's
whole history, without judging a span by an older copy (docs/scale.md, "The value lists, Users
and Sessions and the live feed on the span store"):

- `trace_id IN (SELECT trace_id FROM a_cte)` where the CTE looks up users or sessions (one
  session's traces, `get_session`): a set of traces that cannot depend on the row, on a column
  every copy holds alike. Not for a CTE of a whole window (the Sessions list's): the engine
  computes the CTE again inside, which measured slower than reading the org's spans. Nor a
  `trace_id IN (SELECT trace_id FROM <db>.spans WHERE <scope, window>)` on the raw table (a
  valid superset, tried for the Sessions list: slower too, as the engine runs the list now;
  docs/scale.md, "The Sessions list's trees and the value lists over history");
- a look-up of end users or sessions (`user_id`, `session_id` equal to or in bound values), which
  a later copy may change: still judged outside, on the newest copy, and narrowed inside to the
  traces holding any copy that passes (a superset: no span whose newest copy passes is lost),
  found through the ids' bloom filters (`layout.skip_indexes`);
- a text search, which a later copy may change too: judged outside, and narrowed inside to the
  spans holding any copy whose text matches (`cityHash64(trace_id, span_id) IN (...)`: a
  set of numbers, not of id pairs; a collision only lets another span's copies in, which the
  outer WHERE still judges), so the newest copy is picked among those spans' copies alone, not among the whole window's with their text
  (the org's history for a search over all time);
- a filter's choice of values for other columns (a model, an environment, a status: `=` or
  `IN` bound values), narrowed the same way, with the search in one subquery: the newest copy
  is picked among the spans that have a copy passing, not among the whole window's copies. At
  10M spans the 30-day page of a model in production by duration picked among 8M copies and
  was refused at the read's 2 GiB (`LIMIT 1 BY`'s set of span ids cannot spill to disk).
  Measured (docs/scale.md, "The issue's figures side by side"): selective filters and
  searches 15-50 % faster at 1M and 37-50 % at 10M; a filter most spans pass (production,
  85 % of the demo's) 12-25 % slower, the price of its set. The set of id pairs first tried
  cost those 90 %.
"""

from __future__ import annotations

from sqlalchemy.sql import Select, operators, visitors
from sqlalchemy.sql.elements import (
    AsBoolean,
    BinaryExpression,
    BindParameter,
    BooleanClauseList,
    ColumnClause,
)
from sqlalchemy.sql.selectable import CTE, ScalarSelect

from observatory_core.storage.clickhouse.layout import span_column_names
from observatory_core.storage.dialect import text_search
from observatory_core.storage.schema import spans

# Actor ids the layout gives a bloom filter and a later copy of a span may change.
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


def traces_looked_up(database: str, inner: list[str], lookups: list[str]) -> str:
    """The condition that keeps the traces holding a copy that passes `lookups` (compiled SQL
    over `spans`), among the rows `inner` (the scope and window) already keeps."""
    where = " AND ".join([*inner, *lookups])
    return f"spans.trace_id IN (SELECT spans.trace_id FROM {database}.spans AS spans WHERE {where})"


def searched(clause) -> bool:
    """The text search of `spans`' own text columns (`filters/compile.py`), as a WHERE holds
    it (`AsBoolean`, true: never its negation)."""
    if isinstance(clause, AsBoolean) and clause.operator is operators.is_true:
        clause = clause.element
    if not isinstance(clause, text_search):
        return False
    _id, inp, out, _needle = clause.clauses
    return all(getattr(c, "table", None) is spans for c in (inp, out))


def chosen_values(clause) -> bool:
    """A filter's choice of values for the span's own stored columns: `column = :value` or
    `column IN (:values)` (`filters/compile.py`: a model, an environment, a status, a metadata
    key's value), which a later copy may change. Any copy can be judged by it, so the spans
    with a copy that passes are a superset of those whose newest copy passes. Not a condition
    most rows pass (a twin set aside, `duplicate_of IS NULL`; the LLM calls, `llm_call =
    true`): narrowing by it would collect nearly the whole window's ids for nothing. Not the
    derived table's `id` (keyset bounds), nor a condition marked to be judged on the newest
    copy alone (`_copies.on_newest_copy`)."""
    if not isinstance(clause, BinaryExpression):
        return False
    if clause.operator not in (operators.eq, operators.in_op):
        return False
    if not isinstance(clause.right, BindParameter):
        return False
    stored, seen = span_column_names(), False
    for element in visitors.iterate(clause.left):
        if isinstance(element, Select | ScalarSelect | CTE | text_search):
            return False
        if isinstance(element, ColumnClause):
            if getattr(element, "table", None) is not spans or element.name not in stored:
                return False
            seen = True
    return seen


def narrows(clause) -> bool:
    return actor_lookup(clause) or searched(clause) or chosen_values(clause)


def narrowed(database: str, inner: list[str], compiled: dict) -> list[str]:
    """The conditions to add inside, for `compiled` (clause -> its SQL over `spans`, each one
    `narrows`), among the rows `inner` (the scope and window) already keeps."""
    lookups = [sql for c, sql in compiled.items() if actor_lookup(c)]
    searches = [
        sql
        for c, sql in compiled.items()
        if searched(c) or (chosen_values(c) and not actor_lookup(c))
    ]
    out = [traces_looked_up(database, inner, lookups)] if lookups else []
    if searches:
        where = " AND ".join([*inner, *searches])
        out.append(
            "cityHash64(spans.trace_id, spans.span_id) IN (SELECT "
            "cityHash64(spans.trace_id, spans.span_id) "
            f"FROM {database}.spans AS spans WHERE {where})"
        )
    return out
