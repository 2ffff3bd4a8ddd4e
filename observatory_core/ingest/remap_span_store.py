"""`remap` on the ClickHouse span store (`OBSERVATORY_SPAN_STORE`): the same fields derived
(`remap.derive`, `remap._reprice`), the same LLM-call rule (`llm_calls.row_rule`, the wrappers'
walk of `llm_calls.call_below`), the changed spans written back as the store keeps a span
once (`storage/clickhouse/rewrite_spans.py`: a new copy, the project-days and traces it falls in
rebuilt, the old copy deleted). docs/span-store-internals.md, "Remap".

Per org, two walks of its spans by the table's key, in pages:
1. fields: each page's spans derived; those that learn something rewritten, with their flag
   decided by their own fields (an `other` span with a model and tokens provisionally);
2. flags: the `other` spans the rule counts whose trace holds an LLM call below them (read one
   group of traces at a time) are kept in Python, as `llm_calls.relabel_all` keeps them; every
   span whose stored flag differs from the rule's decision is rewritten with it.
Copies a stopped run left are settled first (their days and traces rebuilt).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.engine import Engine

from observatory_core.base.errors import UserError
from observatory_core.base.settings import get_settings
from observatory_core.ingest.llm_calls import call_below, row_rule, sql_rule
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.remap import RemapReport, _reprice, derive
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse import rewrite_spans as rw
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.org_turns import org_turns
from observatory_core.storage.schema import orgs as orgs_table
from observatory_core.storage.schema import spans

TRACES = 500  # wrapper traces read per statement
_RULE = ("operation", "model", "input_tokens", "output_tokens", "llm_call")
_TREE = ("trace_id", "span_id", "parent_span_id", "operation", "model")
_TREE += ("input_tokens", "output_tokens")


def _day(row: dict[str, Any]) -> tuple[int, Any]:
    return row["project_id"], row["start_time"].date()


def _fields(
    rewriter: rw.Rewriter,
    rows: list[dict[str, Any]],
    max_chars: int,
    prices: PriceBook,
) -> int:
    """One page of the fields walk: the spans that learn something rewritten (their days'
    retention judged for those alone: a day without a change costs no read of its stamps)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        change = derive(row, max_chars)
        if not change:
            continue
        change.update(_reprice(row, change, prices))
        decided = row_rule({**row, **change})
        if decided != bool(row["llm_call"]):
            change["llm_call"] = decided  # a wrapper's is settled by the flags walk
        found[(row["trace_id"], row["span_id"])] = change
    changed = rewriter.unexpired([r for r in rows if (r["trace_id"], r["span_id"]) in found])
    rewriter.rewrite(changed, [found[(r["trace_id"], r["span_id"])] for r in changed])
    return len(changed)


def _wrapped(store: SpanStore, org_id: int) -> set[tuple[str, str]]:
    """(trace, span) of the org's `other` spans the rule counts that have an LLM call below
    them in their trace (`relabel_all`'s `wrapped`)."""
    rule = layout.sql(and_(spans.c.operation == "other", sql_rule(spans.c)))
    table = store.table("spans")
    traces = [
        t
        for (t,) in store.client.query(
            f"SELECT DISTINCT trace_id FROM {table} AS spans WHERE org_id = %(org)s AND {rule}",
            parameters={"org": org_id},
        ).result_rows
    ]
    return _wrapped_in(store, org_id, traces)


def _wrapped_in(store: SpanStore, org_id: int, traces: list[str]) -> set[tuple[str, str]]:
    """`_wrapped` of the org's `traces` alone, read now."""
    table = store.table("spans")
    out: set[tuple[str, str]] = set()
    for i in range(0, len(traces), TRACES):
        chunk = traces[i : i + TRACES]
        result = store.client.query(
            f"SELECT {', '.join(_TREE)} FROM {table} WHERE org_id = %(org)s "
            "AND trace_id IN %(traces)s LIMIT 1 BY trace_id, span_id",
            parameters={"org": org_id, "traces": chunk},
            settings={"max_query_size": 65_536 + 40 * len(chunk)},
        )
        tree = [dict(zip(_TREE, r, strict=True)) for r in result.result_rows]
        children: dict[tuple[str, str], list[dict]] = {}
        for r in tree:
            if r["parent_span_id"]:
                children.setdefault((r["trace_id"], r["parent_span_id"]), []).append(r)
        for r in tree:
            if r["operation"] == "other" and row_rule(r) and call_below(r, children):
                out.add((r["trace_id"], r["span_id"]))
    return out


def _unwrapped(store: SpanStore, org_id: int) -> rw.Check:
    """The check, under the write turn, of the `other` spans the walk is to flag as LLM calls:
    one whose trace now holds a call below it is left out (ingest stored the call, or the
    wrapper with its call, after `_wrapped` read the org: its move or its batch settled it)."""

    def check(rows: list[dict], changes: list[dict]) -> tuple[list[dict], list[dict]]:
        rising = {
            r["trace_id"] for r, c in zip(rows, changes, strict=True)
            if c["llm_call"] and r["operation"] == "other"
        }  # fmt: skip
        if not rising:
            return rows, changes
        now = _wrapped_in(store, org_id, sorted(rising))
        kept = [
            (r, c)
            for r, c in zip(rows, changes, strict=True)
            if not (c["llm_call"] and (r["trace_id"], r["span_id"]) in now)
        ]
        return [r for r, _ in kept], [c for _, c in kept]

    return check


def _flags(store: SpanStore, rewriter: rw.Rewriter, size: int) -> int:
    """The flags walk: every span of the org whose flag differs from the rule's decision
    rewritten with it; answers how many."""
    wrapped = _wrapped(store, rewriter.org_id)
    check = _unwrapped(store, rewriter.org_id)  # ingest goes on while the walk reads
    flipped = 0
    columns = (*_RULE, layout.RETAIN_DAYS)
    for rows in rw.pages(store, rewriter.org_id, columns=columns, size=size):
        wrong = {
            (r["trace_id"], r["span_id"]): decided
            for r in rows
            if (decided := row_rule(r) and (r["trace_id"], r["span_id"]) not in wrapped)
            != bool(r["llm_call"])
        }
        # their days' retention judged for those alone (`Rewriter.unexpired`)
        live = rewriter.unexpired([r for r in rows if (r["trace_id"], r["span_id"]) in wrong])
        if live:
            keys = [(r["trace_id"], r["span_id"], r["start_time"]) for r in live]
            full = rw.full_rows(store, rewriter.org_id, rows[0]["project_id"], keys)
            changes = [{"llm_call": wrong[(r["trace_id"], r["span_id"])]} for r in full]
            before = rewriter.rewritten
            rewriter.rewrite(full, changes, check)
            flipped += rewriter.rewritten - before
        rewriter.flush(before=_day(rows[-1]))
    rewriter.flush()
    return flipped


def remap_span_store(
    engine: Engine,
    store: SpanStore,
    *,
    org_id: int | None = None,
    since: datetime | None = None,
    batch: int = 2000,
    on_batch: Callable[[int, int], None] | None = None,
) -> RemapReport:
    """`remap.remap` on the span store: the spans of one org (or every org of `engine`'s
    `DATABASE_URL`) started at or after `since` derived again, every org's flags decided again,
    the rollups and trace totals of what changed rebuilt. `on_batch(scanned, changed)` per
    page."""
    if store.naming.cluster:
        raise UserError(
            "remap does not run on a span store laid out for a cluster yet (its rebuild of the "
            "rollups would have to run per shard: docs/scale.md, 'Known gaps'); nothing was "
            "changed."
        )
    started = time.perf_counter()
    max_chars = get_settings().text_max_chars
    with engine.connect() as conn:
        prices = PriceBook.load(conn)
        orgs = (
            [org_id]
            if org_id is not None
            else [int(o) for o in conn.execute(select(orgs_table.c.id).order_by(orgs_table.c.id))]
        )
    turn = org_turns(engine)
    scanned = changed = 0
    changed_orgs: set[int] = set()
    for org in orgs:
        rewriter = rw.Rewriter(store, org, turn)
        leftover = rw.leftover_copies(store, org)  # one org's copies read and held at a time
        if leftover:
            rw.settle_copies(rewriter, leftover)
            changed_orgs.add(org)
        for rows in rw.pages(store, org, since=since, size=batch):
            n = _fields(rewriter, rows, max_chars, prices)
            rewriter.flush(before=_day(rows[-1]))
            scanned += len(rows)
            changed += n
            if on_batch:
                on_batch(len(rows), n)
        rewriter.flush()
        if _flags(store, rewriter, batch) or rewriter.rewritten:
            changed_orgs.add(org)
    return RemapReport(scanned, changed, len(changed_orgs), time.perf_counter() - started)
