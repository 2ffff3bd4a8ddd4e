"""spans.llm_call: which spans are LLM calls (requests); rollups keep it as a dimension

Revision ID: 0014
Revises: 0013

Requests, errors, latency, tokens and cost count LLM calls, not every span (docs/metrics.md,
"Subjects"). Each span's decision is stored with it: its operation calls a model (chat,
completion, embeddings), or it is `other` with a model and token counts and no LLM call below
it. Existing spans are decided here with the same rule (set-based: the operation rule, then one
recursive walk down from the `other` spans that carry a model and tokens). The rollup tables
gain `llm_call` as a key column after `status`: rows are copied, flagged by their operation,
and rebuilt from the spans only where an `other` span is an LLM call (the old rows cannot be
split by the flag).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import observatory_core.storage.types

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)
# Frozen copies of the constants in schema.py at this revision.
GRAINS = ("1min", "1hour", "1day")
OLD_DIMENSIONS = ("project_id", "provider", "model", "environment", "operation", "status")
MEASURES = (
    "duration",
    "total_cost",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "input_cost",
    "output_cost",
    "ttft",
    "tps",
    "quality",
)
PARTS = ("count", "sum", "min", "max", "sumsq")
SKETCH_TYPE = sa.LargeBinary().with_variant(postgresql.NUMERIC(), "postgresql")
LLM_OPERATIONS = "('chat', 'completion', 'embeddings')"
WRAPPERS = "operation = 'other' AND llm_call"  # the partial index's rows


def _rule(t: str = "") -> str:
    """An LLM call by its own fields (ingest/llm_calls.py `row_rule` at this revision), over
    the columns of table alias `t`."""
    p = f"{t}." if t else ""
    return (
        f"({p}operation IN {LLM_OPERATIONS} OR ({p}operation = 'other' AND {p}model IS NOT NULL "
        f"AND {p}model <> '' AND ({p}input_tokens > 0 OR {p}output_tokens > 0)))"
    )


def _columns(dimensions: tuple[str, ...]) -> list[sa.Column]:
    keys = {
        "project_id": sa.Integer(),
        "provider": sa.String(length=64),
        "model": sa.String(length=200),
        "environment": sa.String(length=64),
        "operation": sa.String(length=32),
        "status": sa.String(length=8),
        "llm_call": sa.Boolean(),
    }
    return [
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("bucket_start", UTC_TIME, nullable=False),
        *(sa.Column(d, keys[d], nullable=False) for d in dimensions),
        sa.Column("span_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("latency_sketch", SKETCH_TYPE, nullable=False),
        *(
            sa.Column(
                f"{m}_{p}", sa.Integer() if p == "count" else sa.Float(), nullable=p != "count"
            )
            for m in MEASURES
            for p in PARTS
        ),
    ]


def _rewrite(dimensions: tuple[str, ...], grain: str, copy_sql) -> None:
    """rollup_<grain> laid out with these key columns, filled by `copy_sql(old, new)`."""
    name, tmp = f"rollup_{grain}", f"rollup_{grain}_rewrite"
    if _postgres():  # index names are unique per schema
        op.execute(f"ALTER TABLE {name} RENAME CONSTRAINT uq_{name}_key TO uq_{name}_key_old")
    op.create_table(
        tmp,
        *_columns(dimensions),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=f"fk_{name}_org_id_orgs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("org_id", "bucket_start", *dimensions, name=f"uq_{name}_key"),
    )
    op.execute(copy_sql(name, tmp))
    op.drop_table(name)
    op.rename_table(tmp, name)


def _parts() -> list[str]:
    return ["span_count", "error_count", *(f"{m}_{p}" for m in MEASURES for p in PARTS)]


def upgrade() -> None:
    with op.batch_alter_table("spans") as batch:
        batch.add_column(sa.Column("llm_call", sa.Boolean(), server_default="0", nullable=False))
    op.execute(f"UPDATE spans SET llm_call = {_rule()}")
    # An `other` span with a model and tokens is no LLM call when one lies below it.
    op.execute(
        "WITH RECURSIVE below(org_id, trace_id, root, node) AS ("
        " SELECT org_id, trace_id, id, span_id FROM spans"
        "  WHERE operation = 'other' AND llm_call"
        " UNION"
        " SELECT c.org_id, c.trace_id, b.root, c.span_id FROM spans c JOIN below b"
        "  ON c.org_id = b.org_id AND c.trace_id = b.trace_id AND c.parent_span_id = b.node)"
        f" UPDATE spans SET llm_call = {'false' if _postgres() else '0'} WHERE id IN ("
        " SELECT b.root FROM below b JOIN spans s ON s.org_id = b.org_id"
        "  AND s.trace_id = b.trace_id AND s.span_id = b.node"
        f" WHERE s.id <> b.root AND {_rule('s')})"
    )
    op.create_index(
        "ix_spans_org_llm_wrappers",
        "spans",
        ["org_id", "trace_id"],
        sqlite_where=sa.text(WRAPPERS),
        postgresql_where=sa.text(WRAPPERS),
    )
    # Rollup rows keep what they hold, flagged by their operation: exact unless an `other`
    # span is an LLM call, whose rows the flag splits -- then they are rebuilt from the spans.
    plain = ", ".join(["org_id", "bucket_start", *OLD_DIMENSIONS, "latency_sketch", *_parts()])
    for grain in GRAINS:
        _rewrite(
            (*OLD_DIMENSIONS, "llm_call"),
            grain,
            lambda old, new: (
                f"INSERT INTO {new} ({plain}, llm_call) SELECT {plain}, "
                f"operation IN {LLM_OPERATIONS} FROM {old}"
            ),
        )
    split = op.get_bind().execute(
        sa.text("SELECT 1 FROM spans WHERE operation = 'other' AND llm_call LIMIT 1")
    )
    if split.first() is not None:
        op.get_context().config.attributes["rebuild_rollups"] = True


def downgrade() -> None:
    keys = ", ".join(["org_id", "bucket_start", *OLD_DIMENSIONS])
    merged = "obs_sketch_sum(latency_sketch)"
    if _postgres():
        merged = f"coalesce({merged}, 0)"
    aggs = ", ".join(
        f"min({p})" if p.endswith("_min") else f"max({p})" if p.endswith("_max") else f"sum({p})"
        for p in _parts()
    )
    for grain in GRAINS:
        _rewrite(
            OLD_DIMENSIONS,
            grain,
            lambda old, new: (
                f"INSERT INTO {new} ({keys}, latency_sketch, {', '.join(_parts())}) "
                f"SELECT {keys}, {merged}, {aggs} FROM {old} GROUP BY {keys}"
            ),
        )
    op.drop_index("ix_spans_org_llm_wrappers", table_name="spans")
    with op.batch_alter_table("spans") as batch:
        batch.drop_column("llm_call")


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"
