"""rollups at 1 minute, 1 hour and 1 day, actor rollups, trace totals, all backfilled; budgets

Each rollup row: one (org, bucket, project, provider, model, environment, operation, status)
with counts, sums, min, max and sums of squares of ten measures and 64 latency-sketch bins;
rollup_actors_*: the users and sessions seen per (org, bucket, project), for exact distinct counts;
trace_totals: per trace and project, its span count, errors, cost and tokens so far.
The tables are backfilled here, so an upgraded database answers from rollups at once.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

import observatory_core.storage.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Frozen copies of the constants in schema.py at this revision.
GRAINS = ("1min", "1hour", "1day")
DIMENSIONS = ("project_id", "provider", "model", "environment", "operation", "status")
MEASURES = (
    "duration",
    "ttft",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "input_cost",
    "output_cost",
    "total_cost",
    "tps",
    "quality",
)
BINS = 64


def _columns() -> list[sa.Column]:
    cols = [
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("bucket_start", UTC_TIME, nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("span_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
    ]
    for m in MEASURES:
        cols.append(sa.Column(f"{m}_count", sa.Integer(), nullable=False))
        cols += [
            sa.Column(f"{m}_{p}", sa.Float(), nullable=True) for p in ("sum", "min", "max", "sumsq")
        ]
    cols += [sa.Column(f"lat_{i:02d}", sa.Integer(), nullable=False) for i in range(BINS)]
    return cols


def upgrade() -> None:
    for grain in GRAINS:
        name = f"rollup_{grain}"
        op.create_table(
            name,
            *_columns(),
            sa.ForeignKeyConstraint(
                ["org_id"], ["orgs.id"], name=f"fk_{name}_org_id_orgs", ondelete="CASCADE"
            ),
            sa.UniqueConstraint("org_id", "bucket_start", *DIMENSIONS, name=f"uq_{name}_key"),
        )
    for grain in ("1hour", "1day"):
        name = f"rollup_actors_{grain}"
        op.create_table(
            name,
            sa.Column("org_id", sa.Integer(), nullable=False),
            sa.Column("bucket_start", UTC_TIME, nullable=False),
            sa.Column("project_id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=8), nullable=False),
            sa.Column("actor", sa.String(length=200), nullable=False),
            sa.Column("span_count", sa.Integer(), nullable=False),
            sa.ForeignKeyConstraint(
                ["org_id"], ["orgs.id"], name=f"fk_{name}_org_id_orgs", ondelete="CASCADE"
            ),
            sa.UniqueConstraint(
                "org_id", "bucket_start", "project_id", "kind", "actor", name=f"uq_{name}_key"
            ),
        )
    op.create_table(
        "trace_totals",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("root_id", BIG_ID, nullable=True),
        sa.Column("span_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("total_cost_usd", sa.Float(), nullable=False),
        sa.Column("total_tokens", BIG_ID, nullable=False),
        sa.Column("max_span_id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name="fk_trace_totals_org_id_orgs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("org_id", "trace_id", "project_id", name="uq_trace_totals_key"),
    )
    op.create_table(
        "org_budgets",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("monthly_usd", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name="fk_org_budgets_org_id_orgs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", name="pk_org_budgets"),
    )
    # Backfilled from the spans already stored (nothing on a new database) when the upgrade
    # ends, by the code of the schema it ends at: later revisions add rollup columns that the
    # code fills but this revision does not create (see storage/migrate.py).
    op.get_context().config.attributes["rebuild_rollups"] = True


def downgrade() -> None:
    op.drop_table("org_budgets")
    op.drop_table("trace_totals")
    for grain in ("1hour", "1day"):
        op.drop_table(f"rollup_actors_{grain}")
    for grain in GRAINS:
        op.drop_table(f"rollup_{grain}")
