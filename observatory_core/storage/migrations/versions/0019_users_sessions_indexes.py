"""spans: covering indexes for the Users and Sessions views

Revision ID: 0019
Revises: 0014

The Users and Sessions lists group a window's spans by user id or session id
(`traces/users.py`, `traces/sessions.py`). Through the time index every span of the window is
a row read from the table, large rows with their text; these partial indexes hold the columns
those lists read (only the spans that name a user or a session, and count), so a filter of
time and project is answered from the index alone (docs/benchmarks.md, `people_*`).
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

USERS = (
    "org_id",
    "start_time",
    "user_id",
    "project_id",
    "trace_id",
    "llm_call",
    "status",
    "total_tokens",
    "total_cost_usd",
)
SESSIONS = ("org_id", "start_time", "session_id", "project_id", "trace_id", "user_id")


def _where(column: str) -> sa.TextClause:
    return sa.text(f"{column} IS NOT NULL AND duplicate_of IS NULL")


def upgrade() -> None:
    for name, columns, column in (
        ("ix_spans_org_users_window", USERS, "user_id"),
        ("ix_spans_org_sessions_window", SESSIONS, "session_id"),
    ):
        op.create_index(
            name,
            "spans",
            list(columns),
            sqlite_where=_where(column),
            postgresql_where=_where(column),
        )


def downgrade() -> None:
    op.drop_index("ix_spans_org_sessions_window", table_name="spans")
    op.drop_index("ix_spans_org_users_window", table_name="spans")
