"""export_schedules: repeating exports; export_jobs.schedule_id and period_start; webhook
deliveries for a schedule as well as for an alert rule

Revision ID: 0022
Revises: 0021

An export can repeat daily, weekly or monthly on its owner's clock (`exports/schedules.py`).
Each run is an ordinary export job naming its schedule and the period it covers; a unique index
on the pair makes a second run of one period impossible, whatever two workers do. A run's
"file is ready" webhook goes through the alerts' delivery table and loop, so that table's rule
and event become optional and a delivery may name a schedule instead.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import observatory_core.storage.types

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "export_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("filter_json", sa.Text(), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("compression", sa.String(8), nullable=False),
        sa.Column("fields", JSON, nullable=True),
        sa.Column("row_limit", sa.Integer(), nullable=False),
        sa.Column("cadence", sa.String(8), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("next_run_at", UTC_TIME, nullable=False),
        sa.Column("last_job_id", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("webhook_url", sa.String(500), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default="1"),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.id"],
            name=op.f("fk_export_schedules_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_schedules")),
    )
    op.create_index("ix_export_schedules_due", "export_schedules", ["enabled", "next_run_at"])
    op.create_index("ix_export_schedules_org", "export_schedules", ["org_id", "id"])
    # Batch copies on SQLite: nothing refers to export_jobs or webhook_deliveries, so no
    # cascade can reach other rows while a table is copied.
    with op.batch_alter_table("export_jobs") as batch:
        batch.add_column(sa.Column("schedule_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("period_start", UTC_TIME, nullable=True))
        batch.create_foreign_key(
            "fk_export_jobs_schedule_id_export_schedules",
            "export_schedules",
            ["schedule_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(
            "ux_export_jobs_schedule_period", ["schedule_id", "period_start"], unique=True
        )
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.alter_column("rule_id", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("event_id", existing_type=BIG_ID, nullable=True)
        batch.add_column(sa.Column("schedule_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_webhook_deliveries_schedule_id_export_schedules",
            "export_schedules",
            ["schedule_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    op.execute("DELETE FROM webhook_deliveries WHERE rule_id IS NULL OR event_id IS NULL")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_constraint(
            "fk_webhook_deliveries_schedule_id_export_schedules", type_="foreignkey"
        )
        batch.drop_column("schedule_id")
        batch.alter_column("event_id", existing_type=BIG_ID, nullable=False)
        batch.alter_column("rule_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("export_jobs") as batch:
        batch.drop_index("ux_export_jobs_schedule_period")
        batch.drop_constraint("fk_export_jobs_schedule_id_export_schedules", type_="foreignkey")
        batch.drop_column("period_start")
        batch.drop_column("schedule_id")
    op.drop_table("export_schedules")
