"""Values that exist in the caller's data, for the filter widgets' choices.

`distinct_values` reads spans, so its engine comes from `storage/span_reads.py` (on the span
store, the compiler reads the newest copy of each of the org's spans: a value only an older
copy held is not offered); `project_choices` reads `projects`, in DATABASE_URL always."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.base.errors import UserError
from observatory_core.semantic.fields import FIELDS, Widget
from observatory_core.storage.schema import projects, spans

CHOICE_COLUMNS = ("provider", "model", "operation", "environment", "status", "service_name")


def distinct_values(engine: Engine, scope: Scope, column: str, limit: int = 500) -> list[str]:
    """Up to `limit` values of `column` in the scope's spans, sorted (`engine`: where spans
    are read)."""
    scope.require(Permission.METRICS_READ)
    # the fixed ones, and every field whose sidebar widget lists the values seen
    seen = (f.name for f in FIELDS.values() if f.widget is Widget.SEEN)
    choices = tuple(dict.fromkeys((*CHOICE_COLUMNS, *seen)))
    if column not in choices:
        raise UserError(f"No value list for {column!r}; choose from {', '.join(choices)}.")
    col = FIELDS[column].expression(spans.c) if column in FIELDS else spans.c[column]
    query = (
        scoped_spans(scope, col).where(col.is_not(None)).group_by(col).order_by(col).limit(limit)
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
