"""alerts: rules, per-group state, events, webhook deliveries; worker heartbeats; ingest counts

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

import observatory_core.storage.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "org_id",
            sa.Integer(),
            sa.ForeignKey("orgs.id", ondelete="CASCADE", name="fk_alert_rules_org_id_orgs"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("system_kind", sa.String(32)),
        sa.Column("series", sa.String(64), nullable=False),
        sa.Column("comparator", sa.String(2), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("window_s", sa.Integer(), nullable=False),
        sa.Column("filter_json", sa.Text(), nullable=False),
        sa.Column("group_by", sa.String(32)),
        sa.Column("min_requests", sa.Integer(), nullable=False),
        sa.Column("pending_s", sa.Integer(), nullable=False),
        sa.Column("keep_firing_s", sa.Integer(), nullable=False),
        sa.Column("webhook_url", sa.String(500)),
        sa.Column("muted_until", UTC_TIME),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
        sa.UniqueConstraint("org_id", "name", name="uq_alert_rules_org_name"),
    )
    op.create_table(
        "alert_states",
        sa.Column(
            "rule_id",
            sa.Integer(),
            sa.ForeignKey(
                "alert_rules.id", ondelete="CASCADE", name="fk_alert_states_rule_id_alert_rules"
            ),
            nullable=False,
        ),
        sa.Column("group_key", sa.String(200), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("since", UTC_TIME, nullable=False),
        sa.Column("last_breach_at", UTC_TIME),
        sa.Column("last_value", sa.Float()),
        sa.Column("last_requests", sa.Integer()),
        sa.Column("evaluated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "group_key", name="pk_alert_states"),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", BIG_ID, nullable=False, autoincrement=True),
        sa.Column(
            "org_id",
            sa.Integer(),
            sa.ForeignKey("orgs.id", ondelete="CASCADE", name="fk_alert_events_org_id_orgs"),
            nullable=False,
        ),
        sa.Column(
            "rule_id",
            sa.Integer(),
            sa.ForeignKey(
                "alert_rules.id", ondelete="CASCADE", name="fk_alert_events_rule_id_alert_rules"
            ),
            nullable=False,
        ),
        sa.Column("group_key", sa.String(200), nullable=False),
        sa.Column("from_state", sa.String(10), nullable=False),
        sa.Column("to_state", sa.String(10), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
    )
    op.create_index("ix_alert_events_rule_at", "alert_events", ["rule_id", "at"])
    op.create_index("ix_alert_events_org_at", "alert_events", ["org_id", "at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIG_ID, nullable=False, autoincrement=True),
        sa.Column(
            "org_id",
            sa.Integer(),
            sa.ForeignKey("orgs.id", ondelete="CASCADE", name="fk_webhook_deliveries_org_id_orgs"),
            nullable=False,
        ),
        sa.Column(
            "rule_id",
            sa.Integer(),
            sa.ForeignKey(
                "alert_rules.id",
                ondelete="CASCADE",
                name="fk_webhook_deliveries_rule_id_alert_rules",
            ),
            nullable=False,
        ),
        sa.Column(
            "event_id",
            BIG_ID,
            sa.ForeignKey(
                "alert_events.id",
                ondelete="CASCADE",
                name="fk_webhook_deliveries_event_id_alert_events",
            ),
            nullable=False,
        ),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTC_TIME, nullable=False),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("last_error", sa.String(300)),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("finished_at", UTC_TIME),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_rule", "webhook_deliveries", ["rule_id", "id"])
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker_id", sa.String(100), nullable=False),
        sa.Column("seen_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_worker_heartbeats"),
    )
    op.create_table(
        "ingest_counts",
        sa.Column(
            "org_id",
            sa.Integer(),
            sa.ForeignKey("orgs.id", ondelete="CASCADE", name="fk_ingest_counts_org_id_orgs"),
            nullable=False,
        ),
        sa.Column("bucket_start", UTC_TIME, nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "bucket_start", name="pk_ingest_counts"),
    )


def downgrade() -> None:
    for table in (
        "ingest_counts",
        "worker_heartbeats",
        "webhook_deliveries",
        "alert_events",
        "alert_states",
        "alert_rules",
    ):
        op.drop_table(table)
