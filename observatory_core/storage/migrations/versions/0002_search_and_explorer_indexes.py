"""full-text search and trace explorer indexes

SQLite: an FTS5 table with the trigram tokenizer over input/output text, kept in step with
`spans` by triggers. PostgreSQL: pg_trgm GIN indexes, which serve ILIKE '%...%'. Both give
case-insensitive substring search of 3+ characters through an index. Also: a partial index on
root spans (the traces view) and org-leading indexes for sorting by duration and cost.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQLITE_FTS = [
    "CREATE VIRTUAL TABLE spans_fts USING fts5(input_text, output_text, "
    "content='spans', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER spans_fts_insert AFTER INSERT ON spans BEGIN "
    "INSERT INTO spans_fts(rowid, input_text, output_text) "
    "VALUES (new.id, new.input_text, new.output_text); END",
    "CREATE TRIGGER spans_fts_delete AFTER DELETE ON spans BEGIN "
    "INSERT INTO spans_fts(spans_fts, rowid, input_text, output_text) "
    "VALUES ('delete', old.id, old.input_text, old.output_text); END",
    "CREATE TRIGGER spans_fts_update AFTER UPDATE OF input_text, output_text ON spans BEGIN "
    "INSERT INTO spans_fts(spans_fts, rowid, input_text, output_text) "
    "VALUES ('delete', old.id, old.input_text, old.output_text); "
    "INSERT INTO spans_fts(rowid, input_text, output_text) "
    "VALUES (new.id, new.input_text, new.output_text); END",
    "INSERT INTO spans_fts(spans_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)
    else:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_spans_input_trgm ON spans USING gin (input_text gin_trgm_ops)")
        op.execute(
            "CREATE INDEX ix_spans_output_trgm ON spans USING gin (output_text gin_trgm_ops)"
        )
    op.create_index(
        "ix_spans_org_roots",
        "spans",
        ["org_id", "start_time"],
        sqlite_where=sa.text("parent_span_id IS NULL"),
        postgresql_where=sa.text("parent_span_id IS NULL"),
    )
    op.create_index("ix_spans_org_duration", "spans", ["org_id", "duration_ms"])
    op.create_index("ix_spans_org_cost", "spans", ["org_id", "total_cost_usd"])


def downgrade() -> None:
    op.drop_index("ix_spans_org_cost", "spans")
    op.drop_index("ix_spans_org_duration", "spans")
    op.drop_index("ix_spans_org_roots", "spans")
    if op.get_bind().dialect.name == "sqlite":
        for name in ("spans_fts_insert", "spans_fts_delete", "spans_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS spans_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_spans_output_trgm")
        op.execute("DROP INDEX IF EXISTS ix_spans_input_trgm")
