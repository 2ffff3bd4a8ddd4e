"""spans: the instrumentation scope and the twin that counts; orgs: the switch for it

Revision ID: 0013
Revises: 0012

An app instrumented twice sends each LLM call as two spans (docs/ingestion.md, "A call
instrumented twice"). The ingest write path now decides which of a pair counts and marks the
other `duplicate_of` the counted span (and `duplicate_trace_id` its trace); every figure leaves
marked spans out. `scope_name` (the OTLP instrumentation scope, so far only in `attributes`)
is what tells two instrumentations apart; it is filled from the kept attribute.
`orgs.dedup_enabled` lets an org turn the matching off.

"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases (as 0010): a batch copy of `orgs` on SQLite would
    # drop the table, and every row that refers to an org with ON DELETE CASCADE with it;
    # a copy of `spans` would rewrite every span.
    op.add_column("spans", sa.Column("scope_name", sa.String(200)))
    op.add_column("spans", sa.Column("duplicate_of", sa.String(16)))
    op.add_column("spans", sa.Column("duplicate_trace_id", sa.String(32)))
    op.add_column(
        "orgs", sa.Column("dedup_enabled", sa.Boolean(), nullable=False, server_default="1")
    )
    op.create_index(
        "ix_spans_org_duplicates",
        "spans",
        ["org_id", "start_time"],
        sqlite_where=sa.text("duplicate_of IS NOT NULL"),
        postgresql_where=sa.text("duplicate_of IS NOT NULL"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("UPDATE spans SET scope_name = left(attributes ->> 'otel.scope.name', 200)")
    else:
        op.execute(
            "UPDATE spans SET scope_name = substr(json_extract(attributes, "
            "'$.\"otel.scope.name\"'), 1, 200)"
        )


def downgrade() -> None:
    op.drop_index("ix_spans_org_duplicates", table_name="spans")
    op.drop_column("orgs", "dedup_enabled")  # SQLite 3.35+ drops a column in place
    op.drop_column("spans", "duplicate_trace_id")
    op.drop_column("spans", "duplicate_of")
    op.drop_column("spans", "scope_name")
