"""A user's own settings: their time zone (an IANA name), or none to follow the browser's.

The zone is checked (`base.zones.Zone`) before it is stored, so a stored name always opens.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.base.zones import Zone
from observatory_core.storage.schema import users


def user_zone(engine: Engine, scope: Scope) -> Zone | None:
    """The zone the user chose, or None (the app then uses the browser's)."""
    if scope.user_id is None:
        return None
    with engine.connect() as conn:
        name = conn.execute(
            select(users.c.time_zone).where(
                users.c.id == scope.user_id, users.c.org_id == scope.org_id
            )
        ).scalar()
    try:
        return Zone(name) if name else None
    except UserError:  # a name this machine's zone database no longer knows
        return None


def set_user_zone(engine: Engine, scope: Scope, name: str | None) -> Zone | None:
    """Store the user's zone (None or empty: follow the browser again)."""
    if scope.user_id is None:
        raise UserError("Only a logged-in user has a time zone to set.")
    zone = Zone(name) if name else None
    with engine.begin() as conn:
        conn.execute(
            update(users)
            .where(users.c.id == scope.user_id, users.c.org_id == scope.org_id)
            .values(time_zone=zone.name if zone else None)
        )
    return zone
