"""Who is asking. Every read or write of org data goes through a `Scope`.

Isolation lives here, in the query builder: `scoped_spans` is the only way feature modules
select spans, and it always carries the org (and project) conditions, so no caller can forget.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, Table, select
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.accounts.permissions import ROLE_PERMISSIONS, Permission, Role
from observatory_core.base.errors import PermissionDenied
from observatory_core.storage.schema import spans


@dataclass(frozen=True)
class Scope:
    org_id: int
    role: Role
    username: str = "system"
    user_id: int | None = None
    # None means every project of the org; otherwise only these.
    project_ids: frozenset[int] | None = None

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise PermissionDenied(
                f"Your role ({self.role.value}) does not include {permission.value}; "
                "ask an admin of your org for access."
            )


def span_conditions(scope: Scope, table: Table = spans) -> list[ColumnElement[bool]]:
    """The scope's rows of `spans`, or of any table keyed by org and project (the rollups)."""
    conditions: list[ColumnElement[bool]] = [table.c.org_id == scope.org_id]
    if scope.project_ids is not None:
        conditions.append(table.c.project_id.in_(sorted(scope.project_ids)))
    return conditions


def scoped_spans(scope: Scope, *columns) -> Select:
    """SELECT columns FROM spans, already limited to what the scope may see."""
    return select(*columns).select_from(spans).where(*span_conditions(scope))
