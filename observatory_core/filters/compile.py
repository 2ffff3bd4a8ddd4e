"""FilterSpec -> SQL conditions on `spans`, in one place, for both databases."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.dialect import json_array_contains, json_object_text, text_search
from observatory_core.storage.schema import spans

_IN_LISTS = {
    "trace_ids": spans.c.trace_id,
    "span_ids": spans.c.span_id,
    "session_ids": spans.c.session_id,
    "user_ids": spans.c.user_id,
    "providers": spans.c.provider,
    "models": spans.c.model,
    "operations": spans.c.operation,
    "environments": spans.c.environment,
    "statuses": spans.c.status,
    "project_ids": spans.c.project_id,
}
_RANGES = {
    "duration_ms": spans.c.duration_ms,
    "cost_usd": spans.c.total_cost_usd,
    "total_tokens": spans.c.total_tokens,
}


def filter_conditions(spec: FilterSpec, now: datetime, dialect: str) -> list[ColumnElement[bool]]:
    """The WHERE conditions that select exactly the spans `spec` describes at `now`."""
    out: list[ColumnElement[bool]] = []
    start, end = spec.window(now)
    if start is not None:
        out.append(spans.c.start_time >= start)
    if end is not None:
        out.append(spans.c.start_time < end)
    for name, column in _IN_LISTS.items():
        values = getattr(spec, name)
        if values:
            out.append(column.in_(values))
    for name, column in _RANGES.items():
        low, high = getattr(spec, f"min_{name}"), getattr(spec, f"max_{name}")
        if low is not None:
            out.append(column >= low)
        if high is not None:
            out.append(column <= high)
    if spec.tags_any:
        out.append(or_(*(json_array_contains(spans.c.tags, t) for t in spec.tags_any)))
    if spec.tags_all:
        out.append(and_(*(json_array_contains(spans.c.tags, t) for t in spec.tags_all)))
    for key, value in spec.metadata:
        out.append(json_object_text(spans.c.metadata, key) == value)
    if spec.search is not None:
        out.append(
            text_search(spans.c.id, spans.c.input_text, spans.c.output_text, spec.search, dialect)
        )
    return out
