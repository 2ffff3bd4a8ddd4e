"""Schema upgrades through Alembic, callable from the CLI, the app's start and the tests.

Storage knows the schema, not what is derived from the spans: a migration that creates derived
tables over existing spans (0005, the rollups) or changes what they hold (0012, tokens per
second) only asks for them to be recomputed
(`REBUILD_FLAG`); the caller that knows how passes `rebuild` (`rollups/upgrade.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import exists, select
from sqlalchemy.engine import Connection, Engine

from observatory_core.storage.schema import spans

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine | None, connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


REBUILD_FLAG = "rebuild_rollups"  # set in the config's attributes by such a migration


class RebuildNeeded(RuntimeError):
    """An upgrade created derived tables over stored spans, and nobody could fill them."""


def upgrade(
    engine: Engine, revision: str = "head", *, rebuild: Callable[[Connection], object] | None = None
) -> None:
    """Bring the database to `revision`; safe to run on every start. When a migration asks
    for derived tables to be recomputed, `rebuild(conn)` does it in the same transaction;
    without `rebuild` such an upgrade of a database holding spans is refused (rolled back)
    rather than leaving the figures empty."""
    with engine.begin() as conn:
        config = alembic_config(engine, conn)
        command.upgrade(config, revision)
        if config.attributes.get(REBUILD_FLAG) and revision == "head":
            if rebuild is not None:
                rebuild(conn)
            elif conn.execute(select(exists().select_from(spans))).scalar():
                raise RebuildNeeded(
                    "This upgrade creates or recomputes the rollups over stored spans; run it "
                    "through `python -m observatory_core migrate`, which fills them."
                )


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
