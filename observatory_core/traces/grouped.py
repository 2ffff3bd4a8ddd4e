"""What the Users and Sessions lists share: one page of groups of spans (an end user's, a
session's), sorted, searched by id (`id_contains`) and paged by offset, under the same filter as the explorer.

Offsets, not keyset cursors: each page aggregates the filter's spans anyway (a group's figures
are not known before its spans are summed), so a cursor would save nothing; the offset is
bounded instead, and so is the page (docs/architecture.md, "Every request is bounded").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, span_conditions
from observatory_core.accounts.visibility import require_fields, require_filters
from observatory_core.base.errors import UserError
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import store_for

MAX_PAGE = 1000
MAX_OFFSET = 100_000
MAX_SEARCH = 200


@dataclass(frozen=True)
class GroupPage:
    rows: list[dict]
    total: int  # how many groups (users, sessions) match, over every page
    offset: int
    limit: int
    as_of: datetime  # the time relative windows were resolved at

    @property
    def next_offset(self) -> int | None:
        following = self.offset + self.limit
        return following if following < self.total and following <= MAX_OFFSET else None


def check_page(
    scope: Scope,
    sort: str,
    sorts: tuple[str, ...],
    direction: str,
    limit: int,
    offset: int,
    id_contains: str | None,
) -> None:
    """Refuse what no page could answer, with what to do instead."""
    scope.require(Permission.METRICS_READ)
    if sort not in sorts:
        raise UserError(f"Cannot sort by {sort!r}; choose from {', '.join(sorts)}.")
    require_fields(scope, (sort,), "sort by")
    if direction not in ("asc", "desc"):
        raise UserError(f"Sort direction {direction!r} must be 'asc' or 'desc'.")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise UserError(f"Page size must be a whole number from 1 to {MAX_PAGE}, got {limit!r}.")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise UserError(
            f"Offset must be a whole number from 0 to {MAX_OFFSET:,}, got {offset!r}; "
            "narrow the filter or search instead of paging that far."
        )
    if id_contains is not None and (
        not isinstance(id_contains, str) or len(id_contains) > MAX_SEARCH
    ):
        raise UserError(f"Search ids for at most {MAX_SEARCH} characters.")


def matching_spans(engine: Engine, scope: Scope, spec: FilterSpec, as_of: datetime, column) -> list:
    """The explorer's conditions (scope, filter at `as_of`, counted spans) for spans that carry
    `column` (user_id, session_id)."""
    require_filters(scope, spec)
    return [
        *span_conditions(scope),
        *filter_conditions(spec, as_of, store_for(engine).name),
        counted(spans.c),
        column.is_not(None),
    ]


def through_index(engine: Engine, query: Select, spec: FilterSpec, index: str) -> Select:
    """`query` (over spans) read through the view's covering index (migration 0019) when the
    filter uses only time and project, the columns that index holds. PostgreSQL's planner
    picks it by itself; SQLite, without histograms, is told (`Store.index_hint`)."""
    if not spec.only_uses({"project_ids"}):
        return query
    return store_for(engine).index_hint(query, spans, index)


def id_search(engine: Engine, column, id_contains: str | None) -> list:
    """Case-insensitive substring of the id, taken literally (% and _ are not wildcards).
    Not `FilterSpec.search`, which searches prompt and answer text."""
    needle = (id_contains or "").strip().lower()
    store = store_for(engine)
    return [store.contains_literally(func.lower(column), needle)] if needle else []


def read_page(
    engine: Engine,
    grouped: Select,
    key: str,
    sort: str,
    direction: str,
    limit: int,
    offset: int,
    as_of: datetime | None,
) -> GroupPage:
    """One page of `grouped` (one row per group, its id labelled `key`), ordered by `sort`
    then the id, with the number of groups counted in the same statement."""
    g = grouped.subquery("groups")
    value, ident = g.c[sort], g.c[key]
    order = (value.desc(), ident.asc()) if direction == "desc" else (value.asc(), ident.asc())
    query = (
        select(g, func.count().over().label("_total")).order_by(*order).limit(limit).offset(offset)
    )
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        if rows:
            total = rows[0]["_total"]
        else:  # past the last page: still say how many there are
            total = conn.execute(select(func.count()).select_from(g)).scalar_one()
    for r in rows:
        del r["_total"]
    return GroupPage(rows, int(total), offset, limit, as_of or datetime.now(UTC))
