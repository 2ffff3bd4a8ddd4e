"""spans: an index for the explorer's sort by total tokens

Revision ID: 0020
Revises: 0019

The explorer sorts by duration, cost or total tokens; the first two walk an (org_id, column)
index from the end and stop at the page, the tokens sort read every span of the window and
sorted them (358-518 ms for a first page over 7 days of 1M spans, docs/benchmarks.md "Bounded
reads grid"). The same index for tokens.
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_spans_org_tokens", "spans", ["org_id", "total_tokens"])


def downgrade() -> None:
    op.drop_index("ix_spans_org_tokens", table_name="spans")
