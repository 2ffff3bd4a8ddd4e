"""One trace: its spans as a tree (depth-first, children by start time) with totals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from observatory_core.errors import UserError
from observatory_core.permissions import Permission
from observatory_core.scope import Scope, scoped_spans
from observatory_core.storage.schema import spans
from observatory_core.traces.fields import ALL_FIELDS, hidden_fields

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class TraceDetail:
    trace_id: str
    spans: list[dict]  # depth-first; each has "depth"
    start: datetime
    end: datetime
    total_cost_usd: float | None
    total_tokens: int
    error_count: int

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
    columns = [spans.c[f] for f in ALL_FIELDS if f not in hidden]
    query = scoped_spans(scope, *columns).where(spans.c.trace_id == trace_id)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    if not rows:
        return None
    return TraceDetail(
        trace_id=trace_id,
        spans=_depth_first(rows),
        start=min(r["start_time"] for r in rows),
        end=max(r["end_time"] for r in rows),
        total_cost_usd=None
        if "total_cost_usd" in hidden
        else sum(r["total_cost_usd"] for r in rows),
        total_tokens=sum(r["total_tokens"] for r in rows),
        error_count=sum(r["status"] == "error" for r in rows),
    )
