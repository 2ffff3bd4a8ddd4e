"""Independent reference: which span ids a FilterSpec selects, computed in plain Python over the
raw rows. Each declared filter (`semantic.fields`) is read by its kind, from the field's value
in a row (`Field.row_value`), never from its SQL."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.field_declaration import FilterKind
from observatory_core.semantic.field_lookups import filter_keys


def _text_hit(row: dict, columns: tuple[str, ...], needle: str) -> bool:
    needle = needle.lower()
    return any(needle in (row[c] or "").lower() for c in columns)


def _keeps(row: dict, key: str, field, value) -> bool:
    match field.filter:
        case FilterKind.IN_LIST:
            return field.row_value(row) in value
        case FilterKind.RANGE:
            have = field.row_value(row)
            if have is None:
                return False
            return have >= value if key.startswith("min_") else have <= value
        case FilterKind.TAGS:
            tags = set(field.row_value(row) or ())
            return bool(set(value) & tags) if key.endswith("_any") else set(value) <= tags
        case FilterKind.METADATA:
            data = field.row_value(row) or {}
            return all(k in data and str(data.get(k)) == v for k, v in value)
        case FilterKind.SEARCH:
            return _text_hit(row, field.filter_reads(), value)
    raise AssertionError(f"no reference for filter kind {field.filter}")


def reference_ids(df: pl.DataFrame, spec: FilterSpec, now: datetime, org_id: int) -> set[int]:
    expr = pl.col("org_id") == org_id
    start, end = spec.window(now)
    if start is not None:
        expr &= pl.col("start_time") >= start
    if end is not None:
        expr &= pl.col("start_time") < end
    keys = filter_keys()
    filters = spec.filters()
    if not filters:  # the window alone: no row needs reading one by one
        return set(df.filter(expr)["id"].to_list())
    return {
        r["id"]
        for r in df.filter(expr).to_dicts()
        if all(_keeps(r, key, keys[key], value) for key, value in filters.items())
    }


# Issue 24: which spans are LLM calls (requests), from the rule of docs/metrics.md ("Subjects"),
# in plain Python over the raw rows: never from the stored flag.
CALLING_OPERATIONS = {"chat", "completion", "embeddings"}


# The reference walks every row in Python; the shared demo frames are read again and again, so
# the answer is kept per frame (holding the frame, so its id cannot be reused by another).
_LLM_CALLS: dict[int, tuple[pl.DataFrame, frozenset[int]]] = {}


def reference_llm_calls(df: pl.DataFrame) -> set[int]:
    """Ids of the LLM calls: an operation that calls a model, or an `other` span with a model
    and tokens and no LLM call among its descendants (of the same org and trace)."""
    kept = _LLM_CALLS.get(id(df))
    if kept is not None and kept[0] is df:
        return set(kept[1])
    if len(_LLM_CALLS) >= 16:
        _LLM_CALLS.clear()
    calls = _llm_calls(df)
    _LLM_CALLS[id(df)] = (df, frozenset(calls))
    return calls


def _llm_calls(df: pl.DataFrame) -> set[int]:
    rows = df.select(
        "id",
        "org_id",
        "trace_id",
        "span_id",
        "parent_span_id",
        "operation",
        "model",
        "input_tokens",
        "output_tokens",
    ).to_dicts()

    def own(r: dict) -> bool:
        if r["operation"] in CALLING_OPERATIONS:
            return True
        return (
            r["operation"] == "other"
            and bool(r["model"])
            and ((r["input_tokens"] or 0) > 0 or (r["output_tokens"] or 0) > 0)
        )

    children: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["parent_span_id"]:
            children.setdefault((r["org_id"], r["trace_id"], r["parent_span_id"]), []).append(r)

    def below(r: dict) -> bool:
        seen, stack = set(), list(children.get((r["org_id"], r["trace_id"], r["span_id"]), ()))
        while stack:
            c = stack.pop()
            if c["id"] in seen:
                continue
            seen.add(c["id"])
            if own(c):
                return True
            stack += children.get((c["org_id"], c["trace_id"], c["span_id"]), ())
        return False

    return {r["id"] for r in rows if own(r) and not (r["operation"] == "other" and below(r))}


SUBJECT_OPERATIONS = {
    "tool_calls": "execute_tool",
    "agent_runs": "invoke_agent",
    "retrievals": "retrieval",
}


def subject_mask(df: pl.DataFrame, subject: str, llm_ids: set[int]) -> pl.Expr:
    """The rows of a metric subject, as a polars condition."""
    if subject == "spans":
        return pl.lit(True)
    if subject == "llm_calls":
        return pl.col("id").is_in(list(llm_ids))
    return pl.col("operation") == SUBJECT_OPERATIONS[subject]
