"""Declared dimensions: up to 10 tag or metadata keys per org, in slot columns of spans and rollups

Revision ID: 0016
Revises: 0014

Issue 19 (docs/architecture.md, "Declared dimensions"): an admin declares a key
("tag:customer", "metadata:customer") as a dimension; it takes one of the slots dim_1 .. dim_10,
extracted at ingest and back-filled for recent spans by the worker, and the rollups group by
the slots as they group by model. Spans gain the slots as nullable columns (NULL: not
extracted), the rollup tables gain them as key columns ('' for no value: every existing row
holds none) and their unique key is widened; `org_dimensions` maps each org's keys to slots.
Adding columns with a constant default is a catalog change on PostgreSQL; SQLite rebuilds the
rollup tables to widen their key (batch mode).
"""

import sqlalchemy as sa
from alembic import op

import observatory_core.storage.types

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)
# Frozen copies of the constants in schema.py at this revision.
GRAINS = ("1min", "1hour", "1day")
OLD_KEY = (
    "org_id",
    "bucket_start",
    "project_id",
    "provider",
    "model",
    "environment",
    "operation",
    "status",
    "llm_call",
)
SLOTS = tuple(f"dim_{n}" for n in range(1, 11))


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    with op.batch_alter_table("spans") as batch:
        for slot in SLOTS:
            batch.add_column(sa.Column(slot, sa.String(length=200), nullable=True))
    for grain in GRAINS:
        name = f"rollup_{grain}"
        with op.batch_alter_table(name) as batch:
            for slot in SLOTS:
                batch.add_column(
                    sa.Column(slot, sa.String(length=200), nullable=False, server_default="")
                )
            batch.drop_constraint(f"uq_{name}_key", type_="unique")
            batch.create_unique_constraint(f"uq_{name}_key", [*OLD_KEY, *SLOTS])
    op.create_table(
        "org_dimensions",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("covered_from", UTC_TIME, nullable=False),
        sa.Column("done_until", UTC_TIME, nullable=False),
        sa.Column("backfill_to", UTC_TIME, nullable=False),
        sa.Column("rows_done", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("org_id", "slot"),
        sa.UniqueConstraint("org_id", "key", name="uq_org_dimensions_key"),
    )


def downgrade() -> None:
    op.drop_table("org_dimensions")
    for grain in GRAINS:
        name = f"rollup_{grain}"
        # rows that differ only by a slot fold back together by a rebuild (`rollups rebuild`)
        for slot in SLOTS:
            op.execute(f"DELETE FROM {name} WHERE {slot} <> ''")
        with op.batch_alter_table(name) as batch:
            batch.drop_constraint(f"uq_{name}_key", type_="unique")
            batch.create_unique_constraint(f"uq_{name}_key", list(OLD_KEY))
            for slot in SLOTS:
                batch.drop_column(slot)
    with op.batch_alter_table("spans") as batch:
        for slot in SLOTS:
            batch.drop_column(slot)
    op.get_context().config.attributes["rebuild_rollups"] = True
