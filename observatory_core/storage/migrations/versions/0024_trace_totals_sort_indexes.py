"""trace_totals: indexes for the tree-total sorts (cost, tokens, extent)

Revision ID: 0024
Revises: 0023

Traces sorted by a tree total read every trace of the window from trace_totals and sorted them
(290-550 ms for a first page over 7 days of 1M spans on SQLite, docs/benchmarks.md "Bounded
reads grid"). With an (org_id, key) index the list walks the first stretch of the key from the
top instead (`traces/trace_lists.py`, `_walk_tree_index`); the extent (last end - first start)
is the duration sort's key.
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trace_totals_org_cost", "trace_totals", ["org_id", "total_cost_usd"])
    op.create_index("ix_trace_totals_org_tokens", "trace_totals", ["org_id", "total_tokens"])
    op.create_index(
        "ix_trace_totals_org_extent",
        "trace_totals",
        ["org_id", sa.text("(last_end - first_start)")],
    )


def downgrade() -> None:
    op.drop_index("ix_trace_totals_org_extent", table_name="trace_totals")
    op.drop_index("ix_trace_totals_org_tokens", table_name="trace_totals")
    op.drop_index("ix_trace_totals_org_cost", table_name="trace_totals")
