"""One trace: its spans as a tree (depth-first, children by start time) with totals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.base.errors import UserError
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.schema import spans
from observatory_core.traces.fields import ALL_FIELDS, field_column, hidden_fields

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# Spans one detail answer carries (each may hold 2 x 16,000 characters of text): a runaway
# agent loop can write a trace of 100k spans, which must not become one answer of gigabytes.
# The totals still cover every span; the page and the API say how many were left out.
MAX_DETAIL_SPANS = 2000


@dataclass(frozen=True)
class TraceDetail:
    trace_id: str
    spans: list[dict]  # depth-first; each has "depth"
    start: datetime
    end: datetime
    total_cost_usd: float | None
    total_tokens: int
    error_count: int
    span_count: int = 0  # every span of the trace; `spans` holds the first MAX_DETAIL_SPANS

    @property
    def omitted(self) -> int:
        """Spans left out of `spans` (the latest-starting ones of a very large trace)."""
        return max(self.span_count - len(self.spans), 0)

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000


def _depth_first(rows: list[dict]) -> list[dict]:
    by_id = {r["span_id"]: r for r in rows}
    children: dict[str | None, list[dict]] = {}
    for r in rows:
        parent = r["parent_span_id"] if r["parent_span_id"] in by_id else None
        children.setdefault(parent, []).append(r)
    ordered: list[dict] = []
    stack = [
        (r, 0) for r in sorted(children.get(None, []), key=lambda r: r["start_time"], reverse=True)
    ]
    while stack:
        row, depth = stack.pop()
        ordered.append({**row, "depth": depth})
        kids = sorted(children.get(row["span_id"], []), key=lambda r: r["start_time"], reverse=True)
        stack.extend((k, depth + 1) for k in kids)
    return ordered


def get_trace(engine: Engine, scope: Scope, trace_id: str) -> TraceDetail | None:
    """The trace, or None when it does not exist in the caller's scope."""
    scope.require(Permission.TRACES_READ)
    if not isinstance(trace_id, str) or not _TRACE_ID.match(trace_id):
        raise UserError(f"{trace_id!r} is not a trace id (32 lowercase hex digits).")
    hidden = hidden_fields(scope)
    columns = [field_column(f) for f in ALL_FIELDS if f not in hidden]
    in_trace = spans.c.trace_id == trace_id
    query = scoped_spans(scope, *columns).where(in_trace)
    query = query.order_by(spans.c.start_time, spans.c.id).limit(MAX_DETAIL_SPANS)
    # the totals count what every figure counts: a duplicate set aside adds nothing
    c, kept = spans.c, counted(spans.c)
    totals = scoped_spans(
        scope,
        func.count(),
        func.min(c.start_time),
        func.max(c.end_time),
        func.sum(case((kept, c.total_cost_usd), else_=0.0)),
        func.coalesce(func.sum(case((kept, c.total_tokens), else_=0)), 0),
        func.coalesce(func.sum(case((and_(kept, c.status == "error"), 1), else_=0)), 0),
    ).where(in_trace)
    with engine.connect() as conn:
        count, start, end, cost, tokens, errors = conn.execute(totals).one()
        if not count:
            return None
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return TraceDetail(
        trace_id=trace_id,
        spans=_depth_first(rows),
        start=start,
        end=end,
        total_cost_usd=None if "total_cost_usd" in hidden else float(cost or 0.0),
        total_tokens=int(tokens),
        error_count=int(errors),
        span_count=int(count),
    )
