"""Saved dashboards, scoped to the caller's org: list, read, create, update, duplicate, delete.

Everyone who may read metrics reads the org's dashboards; `dashboards:manage` (developers and
admins) writes them. Every write is in the audit trail. Another org's dashboard is "not found",
never "forbidden", so ids say nothing about other orgs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from observatory_core.accounts import audit
from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.dashboards.model import (
    MAX_NAME,
    Dashboard,
    DashboardError,
    from_dict,
    to_dict,
)
from observatory_core.exports.jobs import Conflict, NotFound
from observatory_core.storage.schema import dashboards as table

MAX_ID = 2**31 - 1
MAX_PER_ORG = 500


def _definition(row) -> Dashboard:
    """The stored definition, checked again: one saved before a metric or field it names was
    removed says which dashboard and what to fix instead of failing somewhere later."""
    try:
        return from_dict(json.loads(row.definition))
    except DashboardError as exc:
        raise DashboardError(
            f"Dashboard {row.id} ({row.name}) no longer reads: {exc}. Replace it (PUT) or fix it "
            "in Edit as JSON."
        ) from None


def _row(row) -> dict:
    """A stored dashboard as the API and the page see it: its id, who saved it when, and its
    definition."""
    return {
        "id": row.id,
        "name": row.name,
        "created_by": row.created_by,
        "created_at": row.created_at,
        "updated_by": row.updated_by,
        "updated_at": row.updated_at,
        "dashboard": _definition(row),
    }


def list_dashboards(engine: Engine, scope: Scope) -> list[dict]:
    """The org's dashboards by name (id, name, description, chart count, last change)."""
    scope.require(Permission.METRICS_READ)
    with engine.connect() as conn:
        rows = conn.execute(
            select(table).where(table.c.org_id == scope.org_id).order_by(table.c.name)
        ).all()
    out = []
    for row in rows:  # the raw definition: one that no longer reads is still listed
        data = json.loads(row.definition)
        out.append(
            {
                "id": row.id,
                "name": row.name,
                "description": str(data.get("description", "")),
                "charts": len(data.get("charts") or ()),
                "created_by": row.created_by,
                "created_at": row.created_at,
                "updated_by": row.updated_by,
                "updated_at": row.updated_at,
            }
        )
    return out


def get_dashboard(engine: Engine, scope: Scope, dashboard_id: int) -> dict:
    scope.require(Permission.METRICS_READ)
    with engine.connect() as conn:
        row = conn.execute(
            select(table).where(table.c.id == dashboard_id, table.c.org_id == scope.org_id)
        ).first()
    if row is None:
        raise NotFound(f"No dashboard {dashboard_id} in your org; list them at /dashboards.")
    return _row(row)


def _conflict(name: str) -> Conflict:
    return Conflict(f"Your org already has a dashboard named {name!r}; pick another name.")


def create_dashboard(
    engine: Engine, scope: Scope, dashboard: Dashboard, *, now: datetime | None = None
) -> dict:
    """Save a new dashboard (its name unique in the org); the stored row."""
    scope.require(Permission.DASHBOARDS_MANAGE)
    now = now or datetime.now(UTC)
    try:
        with engine.begin() as conn:
            have = conn.execute(select(table.c.id).where(table.c.org_id == scope.org_id)).all()
            if len(have) >= MAX_PER_ORG:
                raise Conflict(
                    f"Your org has {MAX_PER_ORG} dashboards, the most it may keep; delete one."
                )
            new_id = conn.execute(
                insert(table)
                .values(
                    org_id=scope.org_id,
                    name=dashboard.name,
                    definition=json.dumps(to_dict(dashboard), sort_keys=True),
                    created_by=scope.username,
                    created_at=now,
                    updated_by=scope.username,
                    updated_at=now,
                )
                .returning(table.c.id)
            ).scalar_one()
            audit.record_for(
                conn, scope, "dashboard.create", f"dashboard:{new_id}", after=dashboard.name
            )
    except IntegrityError:
        raise _conflict(dashboard.name) from None
    return get_dashboard(engine, scope, new_id)


def update_dashboard(
    engine: Engine,
    scope: Scope,
    dashboard_id: int,
    dashboard: Dashboard,
    *,
    now: datetime | None = None,
) -> dict:
    """Replace a dashboard's definition (and name); the stored row."""
    scope.require(Permission.DASHBOARDS_MANAGE)
    old = get_dashboard(engine, scope, dashboard_id)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.id == dashboard_id, table.c.org_id == scope.org_id)
                .values(
                    name=dashboard.name,
                    definition=json.dumps(to_dict(dashboard), sort_keys=True),
                    updated_by=scope.username,
                    updated_at=now or datetime.now(UTC),
                )
            )
            audit.record_for(
                conn,
                scope,
                "dashboard.update",
                f"dashboard:{dashboard_id}",
                before=to_dict(old["dashboard"]),
                after=to_dict(dashboard),
            )
    except IntegrityError:
        raise _conflict(dashboard.name) from None
    return get_dashboard(engine, scope, dashboard_id)


def free_name(name: str, taken: set[str]) -> str:
    """`name`, else 'name (2)', 'name (3)' ..., within the name limit."""
    base = name[:MAX_NAME]
    candidate, n = base, 2
    while candidate in taken:
        suffix = f" ({n})"
        candidate, n = base[: MAX_NAME - len(suffix)] + suffix, n + 1
    return candidate


def copy_name(name: str, taken: set[str]) -> str:
    """'Copy of X', then 'Copy of X (2)' ..."""
    return free_name(f"Copy of {name}", taken)


def duplicate_dashboard(engine: Engine, scope: Scope, dashboard_id: int) -> dict:
    """A copy under a free name ("Copy of ..."), to edit without touching the original."""
    scope.require(Permission.DASHBOARDS_MANAGE)
    board: Dashboard = get_dashboard(engine, scope, dashboard_id)["dashboard"]
    taken = {d["name"] for d in list_dashboards(engine, scope)}
    return create_dashboard(engine, scope, replace(board, name=copy_name(board.name, taken)))


def delete_dashboard(engine: Engine, scope: Scope, dashboard_id: int) -> dict:
    """Delete a dashboard; the row as it was (its definition, to restore from)."""
    scope.require(Permission.DASHBOARDS_MANAGE)
    old = get_dashboard(engine, scope, dashboard_id)
    with engine.begin() as conn:
        conn.execute(
            delete(table).where(table.c.id == dashboard_id, table.c.org_id == scope.org_id)
        )
        audit.record_for(
            conn, scope, "dashboard.delete", f"dashboard:{dashboard_id}", before=old["name"]
        )
    return old
