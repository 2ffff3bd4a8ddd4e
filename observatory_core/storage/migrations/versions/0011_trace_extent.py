"""trace_totals: when each trace's last span ended, so a trace's duration is its whole tree

Revision ID: 0011
Revises: 0010

A trace lasts from its earliest span start to its latest span end. The list showed the root
span's own duration instead (9 ms for an agent run whose tree took 32 s); with `last_end`
beside `first_start` the explorer shows and sorts traces by their extent.
"""

import sqlalchemy as sa
from alembic import op

import observatory_core.storage.types

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("trace_totals") as batch:
        batch.add_column(sa.Column("last_end", UTC_TIME))
    op.execute(
        "UPDATE trace_totals SET "
        "last_end = (SELECT max(s.end_time) FROM spans s WHERE s.org_id = trace_totals.org_id "
        "AND s.trace_id = trace_totals.trace_id AND s.project_id = trace_totals.project_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("trace_totals") as batch:
        batch.drop_column("last_end")
