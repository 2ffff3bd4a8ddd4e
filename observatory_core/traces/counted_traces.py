"""Which traces the Traces list holds in traces mode: those with a span that counts.

A trace made only of twins set aside (each span the copy of a call whose other copy, in
another trace, counts: docs/ingestion.md, "A call instrumented twice") counts nothing: no cost,
no tokens, no span, no error, and the Overview's and Home's trace counts and the tree-total
sorts (which rank `trace_totals`, of counted spans only) leave it out. The list by the root's
start, its total and its days leave it out too, so the figures of traces agree with one another
whatever the sort; spans mode still lists its spans. Every trace listed counts a span.

Such a trace's root is set aside too (every span of it is), so the condition is read on the
root row: a root that counts passes outright, with no read; only a set-aside root's trace is
looked into for a span that counts (in the scope, under the page's pin: what the row's
`span_count` counts, `trace_lists.tree_totals`). Roots set aside are few (one per call sent by
two instrumentations into traces of their own, at most), so a page, its total and its days
read as before: a probe per root, tried for the other answer (list such a trace), made the
default page 2.5 times slower on PostgreSQL at 1M spans.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.engine import Connection

from observatory_core.accounts.scope import Scope, scoped_spans, span_conditions
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.dialect import arrival_order
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import store_for


def holds_counted_span(conn: Connection, scope: Scope, max_id: int) -> ColumnElement[bool]:
    """The condition, on a root row of `spans` in the outer query, that its trace holds a span
    that counts (in the scope, arrived by the pin `max_id`). Where the store probes per row
    (`Store.correlated_reads`) a set-aside root's trace is probed by its key; the span store
    reads the traces of the set-aside roots once, then theirs that count (the trace id's skip
    index narrows that read to their granules)."""
    if store_for(conn).correlated_reads:
        other = spans.alias("counting")
        probe = (
            select(other.c.id)
            .where(
                *span_conditions(scope, other),
                other.c.trace_id == spans.c.trace_id,
                counted(other.c),
                arrival_order(other.c.id) <= max_id,
            )
            .correlate(spans)
            .exists()
        )
        return or_(counted(spans.c), probe)
    pinned = arrival_order(spans.c.id) <= max_id
    aside = scoped_spans(scope, spans.c.trace_id).where(
        spans.c.parent_span_id.is_(None), spans.c.duplicate_of.is_not(None), pinned
    )
    theirs = scoped_spans(scope, spans.c.trace_id).where(
        spans.c.trace_id.in_(aside.correlate(None)), counted(spans.c), pinned
    )
    return or_(counted(spans.c), spans.c.trace_id.in_(theirs.correlate(None)))
