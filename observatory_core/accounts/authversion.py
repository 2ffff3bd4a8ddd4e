"""One counter per org for "who may do what changed" (a key revoked, a user disabled, a role
changed). Server processes remember verified API keys; each request reads the org's counter
(one primary-key read) and forgets what it remembered when the counter moved, so a change
reaches every process on its next request, with no time-to-live and no messages between them.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from observatory_core.storage.schema import orgs
from observatory_core.storage.stores import store_for


def bump(conn: Connection, org_id: int) -> None:
    """Call in the transaction that makes the change, so both commit together."""
    conn.execute(
        update(orgs).where(orgs.c.id == org_id).values(auth_version=orgs.c.auth_version + 1)
    )


def current(conn: Connection, org_id: int) -> int:
    return conn.execute(select(orgs.c.auth_version).where(orgs.c.id == org_id)).scalar() or 0


def read(engine: Engine, org_id: int) -> int:
    """`current` on a connection of its own, outside a transaction where the store would
    otherwise pay BEGIN and ROLLBACK: one round trip per request instead of three."""
    with store_for(engine).read_outside_transaction(engine.connect()) as conn:
        return current(conn, org_id)
