"""span retention: per-org and per-project periods; PostgreSQL spans partitioned by month

Revision ID: 0017
Revises: 0014

Orgs gain `span_retention_days` and `rollup_retention_days`, projects `span_retention_days`
(NULL: keep forever, or for a project: as its org). The worker deletes what has expired
(docs/operations.md, "Retention").

On PostgreSQL `spans` becomes a table partitioned by `start_time`, one partition per calendar
month (UTC) plus a default partition for stray times, so a month that has expired everywhere
is dropped whole and its space returns at once. The rows are copied into the new layout with
every column the table has at this point (`SELECT *` between two tables of one shape, made by
`CREATE TABLE ... (LIKE ...)`), so columns added by other migrations travel too; every index is
recreated from its own definition. A partitioned table's primary key and unique constraints
must hold the partition key: the primary key becomes (id, start_time), the span key
(org_id, trace_id, span_id, start_time); the ingest write still skips a span whose
(org_id, trace_id, span_id) is stored whatever its start time (storage/stores/postgres.py).
The SQLite store is not partitioned; nothing changes there but the new columns.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

OLD = "spans_unpartitioned"
KEY = "uq_spans_org_trace_span"
PK = "pk_spans"


def _month(value: datetime) -> datetime:
    return datetime(value.year, value.month, 1, tzinfo=UTC)


def _next_month(value: datetime) -> datetime:
    return datetime(value.year + value.month // 12, value.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    """The partition of the month starting at `start` (frozen copy of the store's rule)."""
    return f"spans_p{start:%Y_%m}"


def _saved_definitions(conn) -> tuple[list[str], list[str], list[str]]:
    """The definitions of the span table's indexes (not the key's), foreign keys and triggers,
    read from the catalogue so whatever earlier migrations (or later ones, on downgrade) made
    is rebuilt as it was."""
    indexes = conn.exec_driver_sql(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        f"AND tablename = 'spans' AND indexname NOT IN ('{PK}', '{KEY}') ORDER BY indexname"
    ).scalars()
    foreign = conn.exec_driver_sql(
        "SELECT format('ALTER TABLE spans ADD CONSTRAINT %%I %%s', conname, "
        "pg_get_constraintdef(oid)) FROM pg_constraint "
        "WHERE conrelid = 'spans'::regclass AND contype = 'f' ORDER BY conname"
    ).scalars()
    triggers = conn.exec_driver_sql(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE tgrelid = 'spans'::regclass AND NOT tgisinternal"
    ).scalars()
    return list(indexes), list(foreign), list(triggers)


def _rebuild(partitioned: bool) -> None:
    """Copy `spans` into a new table of the same columns, partitioned or not, and put back
    its keys, indexes, foreign keys and triggers."""
    conn = op.get_bind()
    referenced = conn.exec_driver_sql(
        "SELECT count(*) FROM pg_constraint WHERE confrelid = 'spans'::regclass"
    ).scalar()
    if referenced:
        raise RuntimeError("a foreign key points at spans; this migration does not move it")
    indexes, foreign, triggers = _saved_definitions(conn)
    sequence = conn.exec_driver_sql("SELECT pg_get_serial_sequence('spans', 'id')").scalar()
    if sequence:  # owned by the old table's column, it would be dropped with it
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    op.execute(f"ALTER TABLE spans RENAME TO {OLD}")
    layout = " PARTITION BY RANGE (start_time)" if partitioned else ""
    op.execute(
        f"CREATE TABLE spans (LIKE {OLD} INCLUDING DEFAULTS INCLUDING STORAGE "
        f"INCLUDING COMMENTS){layout}"
    )
    if partitioned:
        # every month holding spans, the current one and the next two (the worker keeps
        # creating months ahead: storage/retention.py); stray times between go to the default
        held = conn.exec_driver_sql(
            f"SELECT DISTINCT date_trunc('month', start_time AT TIME ZONE 'UTC') FROM {OLD}"
        ).scalars()
        months = {m.replace(tzinfo=UTC) for m in held}
        month = _month(datetime.now(UTC))
        for _ in range(3):
            months.add(month)
            month = _next_month(month)
        for month in sorted(months):
            op.execute(
                f"CREATE TABLE {partition_name(month)} PARTITION OF spans FOR VALUES FROM "
                f"('{month.isoformat()}') TO ('{_next_month(month).isoformat()}')"
            )
        op.execute("CREATE TABLE spans_default PARTITION OF spans DEFAULT")
    op.execute(f"INSERT INTO spans SELECT * FROM {OLD}")
    op.execute(f"DROP TABLE {OLD}")
    if sequence:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY spans.id")
    keys = ", start_time" if partitioned else ""
    op.execute(f"ALTER TABLE spans ADD CONSTRAINT {PK} PRIMARY KEY (id{keys})")
    op.execute(f"ALTER TABLE spans ADD CONSTRAINT {KEY} UNIQUE (org_id, trace_id, span_id{keys})")
    for statement in [*indexes, *foreign, *triggers]:
        op.execute(statement)
    op.execute("ANALYZE spans")


def _partitioned() -> bool:
    kind = op.get_bind().exec_driver_sql(
        "SELECT relkind FROM pg_class WHERE oid = 'spans'::regclass"
    )
    return kind.scalar() == "p"


def upgrade() -> None:
    op.add_column("orgs", sa.Column("span_retention_days", sa.Integer()))
    op.add_column("orgs", sa.Column("rollup_retention_days", sa.Integer()))
    op.add_column("projects", sa.Column("span_retention_days", sa.Integer()))
    if op.get_bind().dialect.name == "postgresql" and not _partitioned():
        _rebuild(partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql" and _partitioned():
        _rebuild(partitioned=False)
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy would drop and recreate
    # `orgs`, whose drop cascades to every row that references it.
    for table, column in (
        ("projects", "span_retention_days"),
        ("orgs", "rollup_retention_days"),
        ("orgs", "span_retention_days"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
