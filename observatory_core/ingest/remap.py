"""`python -m observatory_core remap`: re-derive span fields from the attributes kept with each
span, after the mapping learned names it did not know when the span arrived.

Ingest moves every attribute it understands into a field and keeps the rest in `attributes`;
so a span stored before a mapping improved still holds what the new mapping reads (e.g.
Traceloop's `llm.request.type`, OpenInference's `llm.invocation_parameters`). Remap fills only
fields that are empty (or `other`, for the operation) from those attributes, reprices a span
whose model or tokens it filled, decides again which spans are LLM calls, and rebuilds the
rollups and trace totals of every org it changed. Run twice, the second run changes nothing.
On the span store the same, by `remap_span_store.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Engine

from observatory_core.base.settings import get_settings
from observatory_core.ingest import conventions as cv
from observatory_core.ingest.attributes import as_list
from observatory_core.ingest.llm_calls import relabel_all
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import cut_text
from observatory_core.rollups.maintain import rebuild_on
from observatory_core.storage.schema import orgs as orgs_table
from observatory_core.storage.schema import spans

_READ = (
    "id",
    "org_id",
    "start_time",
    "operation",
    "provider",
    "model",
    "user_id",
    "session_id",
    "finish_reason",
    "input_text",
    "output_text",
    "input_tokens",
    "output_tokens",
    "ttft_ms",
    "cost_source",
    "metadata",
    "attributes",
)


@dataclass(frozen=True)
class RemapReport:
    scanned: int
    changed: int
    orgs_rebuilt: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.scanned / self.seconds if self.seconds else 0.0


def _tokens(attrs: dict[str, Any], names: tuple[str, ...]) -> int | None:
    value = cv.take(attrs, names)
    try:
        number = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and 0 <= number <= 2_000_000_000 else None


def _ttft_ms(attrs: dict[str, Any]) -> float | None:
    """Time to first token from kept attributes, in the mapping's order (docs/ingestion.md):
    an attribute, the Vercel AI SDK's legacy milliseconds, then a kept first-token event."""
    ms = cv.ttft_ms(cv.take(attrs, cv.TTFT_SECONDS))
    for name in ("ai.response.msToFirstChunk", "ai.stream.msToFirstChunk"):
        value = attrs.get(name)
        if ms is None and (scaled := cv.ttft_ms(value)) is not None:
            ms = scaled / 1000  # read as seconds by ttft_ms; the value is milliseconds already
            del attrs[name]
    if ms is None:
        events = attrs.get("otel.events")
        ms = cv.ttft_ms(cv.first_token_seconds_of_kept(events if isinstance(events, list) else []))
    return ms


def derive(row: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """The fields `row` gains from its kept attributes (empty when nothing new is learned)."""
    attrs = dict(row["attributes"] or {})
    before = dict(attrs)
    out: dict[str, Any] = {}
    operation = cv.operation(attrs)
    if row["operation"] == "other" and operation != "other":
        out["operation"] = operation
    for field, names in (("provider", cv.PROVIDER), ("model", cv.MODEL)):
        value = cv.take(attrs, names)
        if row[field] is None and value is not None:
            out[field] = str(value)
    if row["model"] is None and "model" not in out and (model := cv.invocation_model(attrs)):
        out["model"] = model
    for field, names in (("user_id", cv.USER), ("session_id", cv.SESSION)):
        value = cv.take(attrs, names)
        if row[field] is None and value is not None:
            out[field] = str(value)[: spans.c[field].type.length]
    for field, names, pattern in (
        ("input_text", cv.INPUT_MESSAGES, cv.INDEXED_INPUT),
        ("output_text", cv.OUTPUT_MESSAGES, cv.INDEXED_OUTPUT),
    ):
        if row[field] is None:
            text, _ = cv.message_text(attrs, names, pattern)
            if text is not None:
                out[field] = cut_text(text, max_chars)[0]
    finish = as_list(cv.take(attrs, cv.FINISH))
    if row["finish_reason"] is None and finish:
        out["finish_reason"] = str(finish[0])
    for field, names in (("input_tokens", cv.INPUT_TOKENS), ("output_tokens", cv.OUTPUT_TOKENS)):
        value = _tokens(attrs, names)
        if not row[field] and value:
            out[field] = value
    if row["ttft_ms"] is None and (ttft := _ttft_ms(attrs)) is not None:
        out["ttft_ms"] = ttft
    extra = cv.association_metadata(attrs)
    if extra:
        out["metadata"] = {**extra, **(row["metadata"] or {})}
    if not out:
        return {}  # nothing learned: leave the attributes as they are
    if attrs != before:
        out["attributes"] = attrs
    return out


def _reprice(row: dict, changes: dict, prices: PriceBook) -> dict:
    """A span whose model or tokens were filled in is priced again (a reported cost stays)."""
    if row["cost_source"] == "reported" or not {"model", "input_tokens", "output_tokens"} & set(
        changes
    ):
        return {}
    merged = {**row, **changes}
    cost = prices.cost(
        merged["org_id"],
        merged["provider"],
        merged["model"],
        int(merged["input_tokens"] or 0),
        int(merged["output_tokens"] or 0),
        merged["start_time"],
    )
    tokens = int(merged["input_tokens"] or 0) + int(merged["output_tokens"] or 0)
    return {
        "input_cost_usd": cost.input_usd,
        "output_cost_usd": cost.output_usd,
        "total_cost_usd": cost.input_usd + cost.output_usd,
        "cost_source": cost.source,
        "total_tokens": tokens,
    }


def _write(conn, updates: list[tuple[int, dict[str, Any]]]) -> None:
    """One executemany per set of changed columns (a batch's spans mostly share one)."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row_id, changes in updates:
        params = {"b_id": row_id, **{f"b_{k}": v for k, v in changes.items()}}
        by_columns.setdefault(tuple(sorted(changes)), []).append(params)
    for columns, params in by_columns.items():
        statement = (
            update(spans)
            .where(spans.c.id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}", type_=spans.c[name].type) for name in columns})
        )
        conn.execute(statement, params)


def remap(
    engine: Engine,
    *,
    org_id: int | None = None,
    since: datetime | None = None,
    batch: int = 2000,
    on_batch: Callable[[int, int], None] | None = None,
) -> RemapReport:
    """Re-derive fields for the spans of one org (or all) started at or after `since`.

    Each batch is one transaction; the rollups and trace totals of the changed orgs are rebuilt
    at the end in one transaction (readers never see them half done). `on_batch(scanned,
    changed)` reports progress. With the span store set, its spans are remapped
    (`remap_span_store.py`), not `DATABASE_URL`'s."""
    from observatory_core.storage.clickhouse.current import span_store

    store = span_store()
    if store is not None:
        from observatory_core.ingest.remap_span_store import remap_span_store

        return remap_span_store(
            engine, store, org_id=org_id, since=since, batch=batch, on_batch=on_batch
        )
    started = time.perf_counter()
    max_chars = get_settings().text_max_chars
    where = []
    if org_id is not None:
        where.append(spans.c.org_id == org_id)
    if since is not None:
        where.append(spans.c.start_time >= since)
    with engine.connect() as conn:
        prices = PriceBook.load(conn)
    columns = [spans.c[name] for name in _READ]
    scanned = changed = 0
    changed_orgs: set[int] = set()
    last_id = 0
    while True:
        query = select(*columns).where(*where, spans.c.id > last_id).order_by(spans.c.id)
        with engine.begin() as conn:
            rows = [dict(r) for r in conn.execute(query.limit(batch)).mappings()]
            if not rows:
                break
            updates = []
            for row in rows:
                changes = derive(row, max_chars)
                if changes:
                    changes.update(_reprice(row, changes, prices))
                    updates.append((row["id"], changes))
                    changed_orgs.add(row["org_id"])
            _write(conn, updates)
        scanned += len(rows)
        changed += len(updates)
        last_id = rows[-1]["id"]
        if on_batch:
            on_batch(len(rows), len(updates))
    with engine.begin() as conn:
        # which spans are LLM calls, decided again over the whole org (a filled operation,
        # model or tokens changes it; ingest/llm_calls.py)
        orgs = [org_id] if org_id is not None else conn.execute(select(orgs_table.c.id)).scalars()
        for org in list(orgs):
            if relabel_all(conn, org):
                changed_orgs.add(org)
        for changed_org in sorted(changed_orgs):
            rebuild_on(conn, changed_org)
    return RemapReport(scanned, changed, len(changed_orgs), time.perf_counter() - started)


def count_spans(engine: Engine, *, org_id: int | None, since: datetime | None) -> int:
    """How many spans a remap will read (for its progress bar)."""
    from observatory_core.storage.clickhouse.current import span_store

    store = span_store()
    if store is not None:
        from observatory_core.storage.clickhouse.rewrite_spans import count_spans as count_stored

        return count_stored(store, org_id, since)
    where = []
    if org_id is not None:
        where.append(spans.c.org_id == org_id)
    if since is not None:
        where.append(spans.c.start_time >= since)
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(spans).where(*where)).scalar_one())
