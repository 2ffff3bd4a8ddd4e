"""alert_rules: anomaly rules (kind, baseline_weeks, sensitivity, direction)

Revision ID: 0021
Revises: 0020

A rule of kind "anomaly" fires when its series leaves the range usual for this hour of the
week (the same window in each of the last `baseline_weeks` weeks: median and MAD,
`alerts/anomaly.py`). Existing rules are threshold rules: `kind` defaults to "threshold" and
the other columns are NULL for them. An alert event's `threshold` may now be NULL: an anomaly
rule's event stores the baseline median it was judged against, and there may have been none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

COLUMNS = ("kind", "baseline_weeks", "sensitivity", "direction")


def upgrade() -> None:
    with op.batch_alter_table("alert_rules") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(12), nullable=False, server_default="threshold")
        )
        batch.add_column(sa.Column("baseline_weeks", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sensitivity", sa.Float(), nullable=True))
        batch.add_column(sa.Column("direction", sa.String(8), nullable=True))
    # an anomaly rule's event stores the baseline median it was judged against, if it had one
    with op.batch_alter_table("alert_events") as batch:
        batch.alter_column("threshold", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE alert_events SET threshold = 0 WHERE threshold IS NULL")
    with op.batch_alter_table("alert_events") as batch:
        batch.alter_column("threshold", existing_type=sa.Float(), nullable=False)
    with op.batch_alter_table("alert_rules") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
