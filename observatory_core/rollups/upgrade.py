"""Schema upgrades that also fill the rollups when a migration creates them over stored spans
(storage only asks for it: `storage.migrate.REBUILD_FLAG`). Every process that upgrades a
real database (the CLI, the app's start) comes through here."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from observatory_core.rollups.maintain import rebuild_on
from observatory_core.storage import migrate


def upgrade(engine: Engine, revision: str = "head") -> None:
    """`storage.migrate.upgrade`, recomputing the rollups in the same transaction if asked."""
    migrate.upgrade(engine, revision, rebuild=rebuild_on)
