"""Which spans are LLM calls (requests), decided at ingest and stored with the span (`llm_call`).

A span is an LLM call when its operation calls a model (`LLM_OPERATIONS`: chat, completion,
embeddings; the mapping names the operation for every convention). A span of no known operation
(`other`) is one when it carries a model and token counts and no LLM call lies below it (an
unknown wrapper that repeats its call's usage must not count the call twice). A span of another
operation (agent run, tool call, retrieval) never is, even with a model and its children's usage
(the Vercel AI SDK's `invoke_agent` span). docs/metrics.md, "Subjects".

Per batch, inside the write transaction (`ingest/persist.py`):
1. `row_rule` marked each row by its own fields (`spanrows.complete_row`);
2. `settle_new` clears the flag of a new `other` span with an LLM call below it, among the
   stored spans of its trace (this batch included), in `spans` and in the batch's table;
3. after the fold, `settle_stored` clears the flag of a stored `other` ancestor of a new LLM
   call (a child that arrived after its parent) and refolds that ancestor's rollup rows.
`relabel_all` applies the same rule to every stored span (migration 0014 does the same in SQL,
`remap` calls it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, and_, exists, false, or_, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.rollups.refold import refold
from observatory_core.semantic.fields import LLM_OPERATIONS
from observatory_core.storage.schema import spans


def row_rule(row: dict[str, Any]) -> bool:
    """The decision a row's own fields allow: its operation calls a model, or it is `other`
    with a model and tokens (provisional: an LLM call below it clears it)."""
    operation = row.get("operation")
    if operation in LLM_OPERATIONS:
        return True
    return (
        operation == "other"
        and bool(row.get("model"))
        and (int(row.get("input_tokens") or 0) > 0 or int(row.get("output_tokens") or 0) > 0)
    )


def call_below(root: dict[str, Any], children: dict[tuple[str, str], list[dict]]) -> bool:
    """`root` has an LLM call (by `row_rule`) among its descendants in `children` ((trace,
    parent span id) -> rows): the walk in Python, for the span store's rows read per trace."""
    trace = root["trace_id"]
    todo, seen = [root["span_id"]], {root["span_id"]}  # a cycle of bad parent ids ends
    while todo:
        for child in children.get((trace, todo.pop()), ()):
            if row_rule(child):
                return True
            if child["span_id"] not in seen:
                seen.add(child["span_id"])
                todo.append(child["span_id"])
    return False


def sql_rule(c: Any) -> ColumnElement[bool]:
    """`row_rule` in SQL: an LLM call by its own fields."""
    return or_(
        c.operation.in_(LLM_OPERATIONS),
        and_(
            c.operation == "other",
            c.model.is_not(None),
            c.model != "",
            or_(c.input_tokens > 0, c.output_tokens > 0),
        ),
    )


def _wrapper(c: Any) -> ColumnElement[bool]:
    """An `other` span counted as an LLM call: the only kind an LLM call below it clears."""
    return and_(c.operation == "other", c.llm_call == true())


def _with_llm_call_below(roots) -> Any:
    """The ids of `roots` (a select of org_id, trace_id, id, span_id over spans-shaped rows)
    that have an LLM call (by `sql_rule`) among their stored descendants."""
    tree = roots.cte("below", recursive=True)
    child = spans.alias("child")
    tree = tree.union(  # UNION: a cycle of bad parent ids ends
        select(tree.c.org_id, tree.c.trace_id, tree.c.root, child.c.span_id, child.c.id).where(
            child.c.org_id == tree.c.org_id,
            child.c.trace_id == tree.c.trace_id,
            child.c.parent_span_id == tree.c.node,
        )
    )
    below = spans.alias("below_span")
    return (
        select(tree.c.root)
        .join(below, below.c.id == tree.c.node_id)
        .where(tree.c.node_id != tree.c.root, sql_rule(below.c))
        .distinct()
    )


def _roots(src, *where: ColumnElement[bool]):
    c = src.c
    return select(
        c.org_id,
        c.trace_id,
        c.id.label("root"),
        c.span_id.label("node"),
        c.id.label("node_id"),
    ).where(*where)


def settle_new(conn: Connection, new: Table) -> None:
    """Clear the flag of the batch's `other` spans that have an LLM call below them."""
    if not conn.execute(select(exists().where(_wrapper(new.c)))).scalar():
        return  # the common case: no wrapper in the batch, nothing to walk
    cleared = [r for (r,) in conn.execute(_with_llm_call_below(_roots(new, _wrapper(new.c))))]
    if not cleared:
        return
    conn.execute(update(spans).where(spans.c.id.in_(cleared)).values(llm_call=False))
    conn.execute(update(new).where(new.c.id.in_(cleared)).values(llm_call=False))


def settle_stored(conn: Connection, new: Table) -> int:
    """A child that arrived after its `other` parent was counted: clear the stored wrappers
    above the batch's LLM calls, and refold their rollup rows. Returns how many."""
    if not conn.execute(select(exists().where(sql_rule(new.c)))).scalar():
        return 0
    traces = select(new.c.org_id, new.c.trace_id).distinct().subquery("batch_traces")
    stored = spans.alias("stored")
    wrapped = exists().where(  # read from the small partial index of wrappers
        stored.c.org_id == traces.c.org_id,
        stored.c.trace_id == traces.c.trace_id,
        _wrapper(stored.c),
        ~stored.c.id.in_(select(new.c.id)),
    )
    if not conn.execute(select(wrapped)).scalar():
        return 0  # the common case: no counted wrapper in the batch's traces
    up = select(new.c.org_id, new.c.trace_id, new.c.parent_span_id.label("node")).where(
        sql_rule(new.c), new.c.parent_span_id.is_not(None)
    )
    tree = up.cte("above", recursive=True)
    parent = spans.alias("parent")
    tree = tree.union(  # UNION: a cycle of bad parent ids ends
        select(tree.c.org_id, tree.c.trace_id, parent.c.parent_span_id).where(
            parent.c.org_id == tree.c.org_id,
            parent.c.trace_id == tree.c.trace_id,
            parent.c.span_id == tree.c.node,
            parent.c.parent_span_id.is_not(None),
        )
    )
    above = spans.alias("above_span")
    query = (
        select(above.c.id)
        .join(
            tree,
            and_(
                above.c.org_id == tree.c.org_id,
                above.c.trace_id == tree.c.trace_id,
                above.c.span_id == tree.c.node,
            ),
        )
        .where(_wrapper(above.c), ~above.c.id.in_(select(new.c.id)))
        .distinct()
    )
    ids = [i for (i,) in conn.execute(query)]
    if ids:
        conn.execute(update(spans).where(spans.c.id.in_(ids)).values(llm_call=False))
        c = spans.c
        refold(conn, conn.execute(select(c.org_id, c.trace_id, c.start_time).where(c.id.in_(ids))))
    return len(ids)


def relabel_all(conn: Connection, org_id: int | None = None) -> int:
    """Decide `llm_call` again for every stored span (of one org, or all), set-based: the
    operation rule, then the `other` rule. Returns how many spans changed."""
    mine = [] if org_id is None else [spans.c.org_id == org_id]
    c = spans.c
    wrappers = _roots(spans, *mine, c.operation == "other", sql_rule(c))
    wrapped = [r for (r,) in conn.execute(_with_llm_call_below(wrappers))]
    changed = conn.execute(
        update(spans).where(*mine, ~sql_rule(c), c.llm_call == true()).values(llm_call=False)
    ).rowcount
    for i in range(0, len(wrapped), 5000):
        changed += conn.execute(
            update(spans)
            .where(c.id.in_(wrapped[i : i + 5000]), c.llm_call == true())
            .values(llm_call=False)
        ).rowcount
    # the rest of the rule's spans are LLM calls (a wrapper's id is few: kept in Python)
    changed += conn.execute(
        update(spans)
        .where(*mine, sql_rule(c), c.llm_call == false(), c.id.not_in(wrapped))
        .values(llm_call=True)
    ).rowcount
    return changed
