"""trace_totals: when each trace's spans started (first/last) and whether it spans projects;
spans: the start-time index also carries trace_id

Revision ID: 0008
Revises: 0007

The explorer's "traces by total cost" reads candidate traces from trace_totals by time
instead of grouping every span in the window; a trace whose spans sit in several projects is
marked `shared`, so its totals are still summed over all of its rows.
"""

import sqlalchemy as sa
from alembic import op

import observatory_core.storage.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("trace_totals") as batch:
        batch.add_column(sa.Column("first_start", UTC_TIME))
        batch.add_column(sa.Column("last_start", UTC_TIME))
        batch.add_column(sa.Column("shared", sa.Boolean(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE trace_totals SET "
        "first_start = (SELECT min(s.start_time) FROM spans s WHERE s.org_id = trace_totals.org_id "
        "AND s.trace_id = trace_totals.trace_id AND s.project_id = trace_totals.project_id), "
        "last_start = (SELECT max(s.start_time) FROM spans s WHERE s.org_id = trace_totals.org_id "
        "AND s.trace_id = trace_totals.trace_id AND s.project_id = trace_totals.project_id)"
    )
    op.execute(
        "UPDATE trace_totals SET shared = true WHERE EXISTS (SELECT 1 FROM trace_totals o "
        "WHERE o.org_id = trace_totals.org_id AND o.trace_id = trace_totals.trace_id "
        "AND o.project_id <> trace_totals.project_id)"
    )
    op.create_index("ix_trace_totals_org_last", "trace_totals", ["org_id", "last_start"])
    op.create_index(
        "ix_trace_totals_shared",
        "trace_totals",
        ["org_id", "last_start"],
        sqlite_where=sa.text("shared"),
        postgresql_where=sa.text("shared"),
    )
    op.create_index("ix_spans_org_start_trace", "spans", ["org_id", "start_time", "trace_id"])
    op.drop_index("ix_spans_org_start", table_name="spans")


def downgrade() -> None:
    op.create_index("ix_spans_org_start", "spans", ["org_id", "start_time"])
    op.drop_index("ix_spans_org_start_trace", table_name="spans")
    op.drop_index("ix_trace_totals_shared", table_name="trace_totals")
    op.drop_index("ix_trace_totals_org_last", table_name="trace_totals")
    with op.batch_alter_table("trace_totals") as batch:
        batch.drop_column("shared")
        batch.drop_column("last_start")
        batch.drop_column("first_start")
