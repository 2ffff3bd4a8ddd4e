"""indexes for the explorer's typical filters: status and model within an org's time

Measured at 1M spans: "7 days of errors by cost" took 1.5 s on PostgreSQL because the
planner walked the cost index hoping to meet errors early (errors cost nothing, so they sit
at its far end); with (org_id, status, start_time) it reads the errors directly (6 ms).
(org_id, model, start_time) serves the model filter, the most used one.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_spans_org_status_start", "spans", ["org_id", "status", "start_time"])
    op.create_index("ix_spans_org_model_start", "spans", ["org_id", "model", "start_time"])


def downgrade() -> None:
    op.drop_index("ix_spans_org_model_start", "spans")
    op.drop_index("ix_spans_org_status_start", "spans")
