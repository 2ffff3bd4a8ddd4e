"""The rollup tables (docs/metrics.md): per grain, the counts, sums and latency sketch of the
spans of each bucket and key; the actors seen per bucket; the org's declared dimensions.
On the same metadata as the rest of the schema (`storage/schema.py`, which re-exports them).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from observatory_core.semantic.fields import DIMENSION_SLOTS
from observatory_core.semantic.metrics import MEASURE_PARTS, rollup_counts, rollup_measures
from observatory_core.storage.metadata import metadata
from observatory_core.storage.packed_sketch import SKETCH_TYPE
from observatory_core.storage.types import UtcDateTime

# ---- rollups (README "Metrics") -----------------------------------------------------
# Per grain: one row per (org, bucket, project, provider, model, environment, operation, status,
# llm_call)
# with counts, sums, min and max of each measure and the latency sketch (one packed number, see
# storage/packed_sketch.py). NULL provider/model are stored as '' so the row key stays unique
# on both databases. Columns in the order queries most read them: a database reads a row's
# columns up to the last one a query needs, so the sketch and the duration and cost parts come
# first (migration 0009 laid the tables out this way).
ROLLUP_GRAINS = {"1min": 60, "1hour": 3600, "1day": 86400}
ROLLUP_DIMENSIONS = (
    "project_id",
    "provider",
    "model",
    "environment",
    "operation",
    "status",
    "llm_call",  # migration 0014: rows of a subject (LLM calls) are read without spans
    *DIMENSION_SLOTS,  # migration 0016: the org's declared keys ('' for none), `org_dimensions`
)
ROLLUP_MEASURES = (
    # the value measures of the metric declarations (semantic/metrics.py), in `layout` order:
    # duration, total_cost, total_tokens, ...
    *rollup_measures(),
)
# the count columns of the declarations: span_count, error_count
ROLLUP_COUNTS = tuple(rollup_counts())


def _rollup_table(grain: str) -> Table:
    name = f"rollup_{grain}"
    return Table(
        name,
        metadata,
        Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
        Column("bucket_start", UtcDateTime, nullable=False),
        Column("project_id", Integer, nullable=False),
        Column("provider", String(64), nullable=False),
        Column("model", String(200), nullable=False),
        Column("environment", String(64), nullable=False),
        Column("operation", String(32), nullable=False),
        Column("status", String(8), nullable=False),
        Column("llm_call", Boolean, nullable=False),
        *(Column(c, Integer, nullable=False) for c in ROLLUP_COUNTS),
        Column("latency_sketch", SKETCH_TYPE, nullable=False),
        *(
            Column(f"{m}_{part}", Integer if part == "count" else Float, nullable=part != "count")
            for m in ROLLUP_MEASURES
            for part in MEASURE_PARTS
        ),
        # migration 0016 (issue 19): the declared dimensions' slots, '' for no value
        *(Column(c, String(200), nullable=False, server_default="") for c in DIMENSION_SLOTS),
        UniqueConstraint("org_id", "bucket_start", *ROLLUP_DIMENSIONS, name=f"uq_{name}_key"),
    )


ROLLUPS: dict[str, Table] = {grain: _rollup_table(grain) for grain in ROLLUP_GRAINS}

# Issue 19: the tag or metadata keys an org's admins declared as dimensions, each in one slot
# of `DIMENSION_SLOTS` (spans and rollups carry the slot's value). The back-fill of recent
# spans runs in the worker (`rollups/dimensions.py`): `covered_from` is the earliest span
# time the slot holds, and the rollup path reads the slot only once `status` is ready.
org_dimensions = Table(
    "org_dimensions",
    metadata,
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("slot", String(8), primary_key=True),
    Column("key", String(80), nullable=False),
    Column("status", String(16), nullable=False),  # backfilling, ready
    Column("covered_from", UtcDateTime, nullable=False),
    Column("done_until", UtcDateTime, nullable=False),  # the back-fill's progress, oldest first
    Column("backfill_to", UtcDateTime, nullable=False),
    Column("rows_done", BigInteger, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(200)),
    UniqueConstraint("org_id", "key", name="uq_org_dimensions_key"),
)

# Distinct users and sessions cannot be summed, so the actors seen per bucket are kept:
# a distinct count over these rows is exact and reads far fewer rows than the spans.
ACTOR_GRAINS = ("1hour", "1day")
ACTOR_KINDS = ("user", "session")


def _actor_table(grain: str) -> Table:
    name = f"rollup_actors_{grain}"
    return Table(
        name,
        metadata,
        Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
        Column("bucket_start", UtcDateTime, nullable=False),
        Column("project_id", Integer, nullable=False),
        Column("kind", String(8), nullable=False),
        Column("actor", String(200), nullable=False),
        Column("span_count", Integer, nullable=False),
        UniqueConstraint(
            "org_id", "bucket_start", "project_id", "kind", "actor", name=f"uq_{name}_key"
        ),
    )


ACTOR_ROLLUPS: dict[str, Table] = {grain: _actor_table(grain) for grain in ACTOR_GRAINS}
