"""Values that exist in the caller's data, for the filter widgets' choices.

`distinct_values` reads spans, so its engine comes from `storage/span_reads.py` (on the span
store, each span's one stored row: a value only a folded older copy held is not offered); `project_choices` reads `projects`, in DATABASE_URL always.

The lists offer the values of spans that started in the last `VALUE_DAYS` days, on every
store alike: a read of the org's whole history grows with it (on the span store a read of
every span the org ever kept), and a model or environment unused for a quarter is
clutter in a list. A value older than that is still filtered on when a link names it (the
sidebar adds a link's values to the choices, `ui/filters.py`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.base.errors import UserError
from observatory_core.semantic.field_declaration import Widget
from observatory_core.semantic.fields import FIELDS
from observatory_core.storage.schema import projects, spans

CHOICE_COLUMNS = ("provider", "model", "operation", "environment", "status", "service_name")
# How far back the lists look (docs/span-store-internals.md, "The value lists"): the sidebar's
# windows up to "Last 90 days" find their values listed.
VALUE_DAYS = 90


def distinct_values(
    engine: Engine,
    scope: Scope,
    column: str,
    limit: int = 500,
    *,
    now: datetime | None = None,
    days: int | None = VALUE_DAYS,
) -> list[str]:
    """Up to `limit` values of `column` in the scope's spans that started in the `days` days
    before `now` (None: all time), sorted (`engine`: where spans are read)."""
    scope.require(Permission.METRICS_READ)
    # the fixed ones, and every field whose sidebar widget lists the values seen
    seen = (f.name for f in FIELDS.values() if f.widget is Widget.SEEN)
    choices = tuple(dict.fromkeys((*CHOICE_COLUMNS, *seen)))
    if column not in choices:
        raise UserError(f"No value list for {column!r}; choose from {', '.join(choices)}.")
    col = FIELDS[column].expression(spans.c) if column in FIELDS else spans.c[column]
    since = (
        []
        if days is None
        else [spans.c.start_time >= (now or datetime.now(UTC)) - timedelta(days=days)]
    )
    query = (
        scoped_spans(scope, col)
        .where(col.is_not(None), *since)
        .group_by(col)
        .order_by(col)
        .limit(limit)
    )
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def project_choices(engine: Engine, scope: Scope) -> dict[int, str]:
    """Projects the scope may see, id -> name."""
    query = projects.select().where(projects.c.org_id == scope.org_id).order_by(projects.c.name)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return {
        r["id"]: r["name"]
        for r in rows
        if scope.project_ids is None or r["id"] in scope.project_ids
    }
