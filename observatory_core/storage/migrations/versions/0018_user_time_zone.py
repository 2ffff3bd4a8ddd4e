"""users.time_zone: each user's time zone (an IANA name; NULL follows the browser's); and
export_jobs.time_zone: the zone an export's local time columns are written in

Revision ID: 0018
Revises: 0014

Times, days, weeks and months are shown on the reader's clock (docs/metrics.md, "Time
zones"). A user who picks a zone keeps it here; until then the app uses the browser's. Adding a
nullable column leaves every existing row as it was (no rewrite on either store).
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(64), nullable=True))
    with op.batch_alter_table("export_jobs") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(64), nullable=True))


def downgrade() -> None:
    for table in ("export_jobs", "users"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("time_zone")
