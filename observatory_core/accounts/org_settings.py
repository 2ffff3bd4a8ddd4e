"""Per-org switches an admin may change, each change in the audit trail.

One so far: whether a call sent twice (an app instrumented twice) counts once
(docs/ingestion.md, "A call instrumented twice"). Turning it off keeps every span counting
from then on; spans already set aside stay so.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from observatory_core.accounts.audit import record_for
from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.storage.schema import orgs


def dedup_enabled(engine: Engine, scope: Scope) -> bool:
    """Whether the org sets aside the twin of a call sent twice."""
    with engine.connect() as conn:
        found = conn.execute(select(orgs.c.dedup_enabled).where(orgs.c.id == scope.org_id))
        return bool(found.scalar())


def set_dedup(engine: Engine, scope: Scope, enabled: bool) -> bool:
    """Admins turn the matching on or off; answers whether it changed (and was audited)."""
    scope.require(Permission.ADMIN)
    if not isinstance(enabled, bool):
        raise UserError("Say on or off: whether a call sent twice counts once.")
    with engine.begin() as conn:
        before = conn.execute(
            select(orgs.c.dedup_enabled).where(orgs.c.id == scope.org_id)
        ).scalar()
        if before is None:
            raise UserError("This org no longer exists.")
        if bool(before) == enabled:
            return False
        conn.execute(update(orgs).where(orgs.c.id == scope.org_id).values(dedup_enabled=enabled))
        record_for(
            conn,
            scope,
            "org.dedup",
            "count a call sent twice once",
            before={"dedup_enabled": bool(before)},
            after={"dedup_enabled": enabled},
        )
    return True
