"""dashboards: each org's saved dashboards (issue 20 part 1)

Revision ID: 0023
Revises: 0022

A dashboard is a name and a JSON definition (period, filters, a grid of charts; see
`dashboards/model.py`), unique by name within its org. A new table: nothing existing changes.
"""

import sqlalchemy as sa
from alembic import op

import observatory_core.storage.types

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dashboards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name="fk_dashboards_org_id_orgs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_dashboards"),
        sa.UniqueConstraint("org_id", "name", name="uq_dashboards_org_name"),
    )


def downgrade() -> None:
    op.drop_table("dashboards")
