"""rollups: tokens per second counts the time after the first token; recompute the rollups

Revision ID: 0012
Revises: 0011

`tokens_per_second` (the rollups' `tps_*` partials) was output tokens over the whole call; where
the time to first token is known it is now over the time after it (semantic/metrics.py,
docs/metrics.md). No column changes; the stored partials are recomputed from the spans by the
upgrade that asks for it (storage/migrate.py, rollups/upgrade.py), so rollup answers agree with
raw ones at once.
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.get_context().config.attributes["rebuild_rollups"] = True


def downgrade() -> None:
    pass  # the partials then hold the newer definition until `rollups rebuild`
