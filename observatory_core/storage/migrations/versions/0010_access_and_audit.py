"""access: an auth version per org, log-in sessions, log-in throttling, a fuller audit log

Revision ID: 0010
Revises: 0009

A revoked key, a disabled user or a changed role bumps `orgs.auth_version`, which every API
request compares with what its process remembered. Sessions make logging out and idling end a
login on the server; `auth_throttle` counts failures per username and address; audit entries
gain before/after values and the client address.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import observatory_core.storage.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Plain ALTER TABLE on both databases: a batch copy of `orgs` on SQLite would drop the
    # table, and every row that refers to an org with ON DELETE CASCADE with it.
    op.add_column(
        "orgs", sa.Column("auth_version", sa.Integer(), nullable=False, server_default="0")
    )
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("org_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("before", JSON, nullable=True))
        batch.add_column(sa.Column("after", JSON, nullable=True))
        batch.add_column(sa.Column("address", sa.String(length=64), nullable=True))
    op.create_table(
        "user_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("last_seen_at", UTC_TIME, nullable=False),
        sa.Column("ended_at", UTC_TIME, nullable=True),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_user_sessions")),
    )
    op.create_index("ix_user_sessions_user", "user_sessions", ["user_id"])
    op.create_table(
        "auth_throttle",
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", UTC_TIME, nullable=False),
        sa.Column("locked_until", UTC_TIME, nullable=True),
        sa.PrimaryKeyConstraint("kind", "subject", name=op.f("pk_auth_throttle")),
    )


def downgrade() -> None:
    op.drop_table("auth_throttle")
    op.drop_table("user_sessions")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("address")
        batch.drop_column("after")
        batch.drop_column("before")
    op.execute("DELETE FROM audit_log WHERE org_id IS NULL")
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("org_id", existing_type=sa.Integer(), nullable=False)
    op.drop_column("orgs", "auth_version")  # SQLite 3.35+ drops a column in place
