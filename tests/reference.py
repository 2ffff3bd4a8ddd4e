"""Independent reference: which span ids a FilterSpec selects, computed with polars and Python."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from observatory_core.filters.spec import FilterSpec

_IN = {
    "trace_ids": "trace_id",
    "span_ids": "span_id",
    "session_ids": "session_id",
    "user_ids": "user_id",
    "providers": "provider",
    "models": "model",
    "operations": "operation",
    "environments": "environment",
    "statuses": "status",
    "project_ids": "project_id",
}
_RANGE = {
    "duration_ms": "duration_ms",
    "cost_usd": "total_cost_usd",
    "total_tokens": "total_tokens",
}


def _text_hit(row: dict, needle: str) -> bool:
    needle = needle.lower()
    return any(needle in (row[c] or "").lower() for c in ("input_text", "output_text"))


def reference_ids(df: pl.DataFrame, spec: FilterSpec, now: datetime, org_id: int) -> set[int]:
    expr = pl.col("org_id") == org_id
    start, end = spec.window(now)
    if start is not None:
        expr &= pl.col("start_time") >= start
    if end is not None:
        expr &= pl.col("start_time") < end
    for name, column in _IN.items():
        if getattr(spec, name):
            expr &= pl.col(column).is_in(list(getattr(spec, name)))
    for name, column in _RANGE.items():
        low, high = getattr(spec, f"min_{name}"), getattr(spec, f"max_{name}")
        if low is not None:
            expr &= pl.col(column) >= low
        if high is not None:
            expr &= pl.col(column) <= high
    rows = df.filter(expr).to_dicts()
    keep = []
    for r in rows:
        if spec.tags_any and not set(spec.tags_any) & set(r["tags"]):
            continue
        if spec.tags_all and not set(spec.tags_all) <= set(r["tags"]):
            continue
        if any(str(r["metadata"].get(k)) != v or k not in r["metadata"] for k, v in spec.metadata):
            continue
        if spec.search is not None and not _text_hit(r, spec.search):
            continue
        keep.append(r["id"])
    return set(keep)
