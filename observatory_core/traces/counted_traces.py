"""Which traces the Traces list holds in traces mode: those with a span that counts.

A trace made only of twins set aside (each span the copy of a call whose other copy, in
another trace, counts: docs/ingestion.md, "A call instrumented twice") counts nothing: no cost,
no tokens, no span, no error, and the Overview's and Home's trace counts and the tree-total
sorts (which rank `trace_totals`, of counted spans only) leave it out. The list by the root's
start, its total and its days leave it out too; spans mode still lists its spans. Every trace
listed counts a span. (A trace whose root is set aside but another span counts is listed by
the root's start and not by a tree total: docs/scale.md, "Known gaps".)

Such a trace's root is set aside too (every span of it is), so only a set-aside root's trace is
ever looked into. The page and its count read a flag of the root row (`set_aside_flag`, a
column the writer already set) and look further only when a root on the page, or among those
counted, is set aside: on data without twins the reads are those of before. A probe per root
(of every root's trace, tried first) made the default page 2.5 times slower on PostgreSQL at
1M spans; the condition `holds_counted_span` in the count of every root, 0.48 -> 0.58 s there
(each root's row read up to `duplicate_of`, past its texts), and on the span store the sets it
builds doubled the newest roots' read (6.6 -> 12.9-25 ms at 300k spans).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import ColumnElement, Label, Select, case, func, not_, or_, select
from sqlalchemy.engine import Connection

from observatory_core.accounts.scope import Scope, scoped_spans, span_conditions
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.dialect import arrival_order
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import store_for

ASIDE = "root_set_aside"  # the flag's column in a page's rows, taken out before they are shown


def set_aside_flag() -> Label:
    """A column of a root row: whether the root is set aside as a twin (its trace may count
    nothing)."""
    return (~counted(spans.c)).label(ASIDE)


def _counting(scope: Scope, max_id: int, traces: list[str]) -> Select:
    """The ids of those of `traces` with a span that counts (in the scope, under the pin)."""
    c = spans.c
    return scoped_spans(scope, c.trace_id).where(
        c.trace_id.in_(traces), counted(c), arrival_order(c.id) <= max_id
    )


def counting_page(
    conn: Connection,
    scope: Scope,
    max_id: int,
    roots: Select,
    read: Callable[[Select], list[dict]],
    within: list,
) -> list[dict]:
    """The page `read` finds among `roots` (which carry `set_aside_flag`), read again under
    `holds_counted_span` when one of its roots is of a trace that counts no span; the flag
    taken out of the rows (in place). Only the set-aside roots' traces are looked into, in one
    read by their ids. `within`: conditions on the roots (the filter's), which bound the span
    store's set of set-aside roots."""
    rows = read(roots)
    aside = [r["trace_id"] for r in rows if r[ASIDE]]
    if aside:
        found = set(conn.execute(_counting(scope, max_id, aside).distinct()).scalars())
        if any(t not in found for t in aside):
            rows = read(roots.where(holds_counted_span(conn, scope, max_id, within)))
    for r in rows:
        del r[ASIDE]
    return rows


def holds_counted_span(
    conn: Connection, scope: Scope, max_id: int, within: list
) -> ColumnElement[bool]:
    """The condition, on a root row of `spans` in the outer query, that its trace holds a span
    that counts (in the scope, arrived by the pin `max_id`): a root that counts passes
    outright. Where the store probes per row (`Store.correlated_reads`) a set-aside root's
    trace is probed by its key; the span store reads the traces of the set-aside roots once
    (those passing `within`, the outer query's conditions on its roots, so the set is the
    filter's, not every set-aside root of all time), then theirs that count (the trace id's
    skip index narrows that read)."""
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
        spans.c.parent_span_id.is_(None), ~counted(spans.c), pinned, *within
    )
    theirs = scoped_spans(scope, spans.c.trace_id).where(
        spans.c.trace_id.in_(aside.correlate(None)), counted(spans.c), pinned
    )
    return or_(counted(spans.c), spans.c.trace_id.in_(theirs.correlate(None)))


def count_roots(conn: Connection, scope: Scope, where: list, max_id: int) -> int:
    """How many roots pass `where` (on `spans`) whose trace holds a span that counts: the
    roots, with how many of them are set aside, in one pass; only when some are, those of
    traces that count nothing, taken off."""
    aside = func.sum(case((~counted(spans.c), 1), else_=0))
    total, flagged = conn.execute(scoped_spans(scope, func.count(), aside).where(*where)).one()
    if not flagged:
        return int(total)
    alone = scoped_spans(scope, func.count()).where(
        *where, not_(holds_counted_span(conn, scope, max_id, where))
    )
    return int(total) - int(conn.execute(alone).scalar_one())
