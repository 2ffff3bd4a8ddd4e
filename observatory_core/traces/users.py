"""The Users view: each end user (the spans' `user_id`) with their figures under a filter.

What each figure counts (docs/metrics.md, "Subjects"), over the spans the filter selects
(the explorer's `FilterSpec`, counted spans only, `semantic/duplicates.py`):
- `request_count`, `error_count`, `total_tokens`, `total_cost_usd`: the user's LLM calls
  (the `llm_call` flag), as the metrics request_count, error_count, total_tokens.sum and
  total_cost.sum grouped by user_id count them;
- `trace_count`: distinct traces holding one of the user's matching spans (what the
  explorer lists in traces mode for `user_ids=<user>`);
- `first_seen`, `last_seen`: the start of the user's earliest and latest matching span.
A viewer gets no cost column (and may not sort by it).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, case, func, select, true
from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import can_see
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.schema import spans
from observatory_core.traces.grouped import (
    GroupPage,
    check_page,
    id_search,
    matching_spans,
    read_page,
    through_index,
)

SORTS = (
    "request_count",
    "total_cost_usd",
    "total_tokens",
    "error_count",
    "trace_count",
    "first_seen",
    "last_seen",
    "user_id",
)
COLUMNS = ("user_id", *(s for s in SORTS if s != "user_id"))


def user_columns(scope: Scope) -> tuple[str, ...]:
    """The columns of the list the caller's role may see (a viewer: no cost)."""
    return tuple(c for c in COLUMNS if c != "total_cost_usd" or can_see(scope, c))


def list_users(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    id_contains: str | None = None,
    sort: str = "request_count",
    direction: str = "desc",
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
) -> GroupPage:
    """One page of end users whose spans match `spec`, sorted, searched by user id."""
    check_page(scope, sort, SORTS, direction, limit, offset, id_contains)
    as_of = now or datetime.now(UTC)
    c = spans.c
    call = c.llm_call == true()

    def over_calls(value, zero):
        return func.coalesce(func.sum(case((call, value), else_=zero)), zero)

    figures = {
        "request_count": over_calls(1, 0),
        "total_cost_usd": over_calls(c.total_cost_usd, 0.0),
        "total_tokens": over_calls(c.total_tokens, 0),
        "error_count": func.coalesce(
            func.sum(case((and_(call, c.status == "error"), 1), else_=0)), 0
        ),
        "trace_count": func.count(c.trace_id.distinct()),
        "first_seen": func.min(c.start_time),
        "last_seen": func.max(c.start_time),
    }
    shown = user_columns(scope)
    grouped = through_index(
        engine,
        select(c.user_id, *(v.label(k) for k, v in figures.items() if k in shown))
        .select_from(spans)
        .where(
            *matching_spans(engine, scope, spec, as_of, c.user_id),
            *id_search(engine, c.user_id, id_contains),
        )
        .group_by(c.user_id),
        spec,
        "ix_spans_org_users_window",
    )
    return read_page(engine, grouped, "user_id", sort, direction, limit, offset, as_of)
