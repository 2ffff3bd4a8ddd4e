"""rollups: the 64 latency-bin columns become one packed sketch; columns reordered by use

Revision ID: 0009
Revises: 0008

Merging sketches summed 64 columns per rollup row (most of a 30-day hourly series' time on
PostgreSQL); one packed number per row is merged with one addition (storage/packed_sketch.py).
The tables are rewritten with the sketch and the duration and cost parts first, since a database
reads a row's columns up to the last one a query needs. Existing rows are converted, not
rebuilt from spans, so rollups keep whatever they held.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import observatory_core.storage.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UTC_TIME = observatory_core.storage.types.UtcDateTime(timezone=True)
# Frozen copies of the constants in schema.py at this revision.
GRAINS = ("1min", "1hour", "1day")
DIMENSIONS = ("project_id", "provider", "model", "environment", "operation", "status")
OLD_MEASURES = (
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
BINS = 64
# The packed sketch (storage/packed_sketch.py at this revision).
SKETCH_TYPE = sa.LargeBinary().with_variant(postgresql.NUMERIC(), "postgresql")
PG_BIN_DIGITS = 12
SQLITE_BIN_BITS = 40


def _key_columns() -> list[sa.Column]:
    return [
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


def _measure_columns(measures: tuple[str, ...]) -> list[sa.Column]:
    return [
        sa.Column(f"{m}_{p}", sa.Integer() if p == "count" else sa.Float(), nullable=p != "count")
        for m in measures
        for p in PARTS
    ]


def _bin_columns() -> list[sa.Column]:
    return [sa.Column(f"lat_{i:02d}", sa.Integer(), nullable=False) for i in range(BINS)]


def _plain_names() -> list[str]:
    return [c.name for c in _key_columns()] + [c.name for c in _measure_columns(MEASURES)]


def _rewrite(grain: str, columns: list[sa.Column], sketch_sql: str, sketch_names: list[str]):
    """Copy rollup_<grain> into a table laid out as `columns`, then swap it in."""
    name, tmp = f"rollup_{grain}", f"rollup_{grain}_rewrite"
    if op.get_bind().dialect.name == "postgresql":  # index names are unique per schema
        op.execute(f"ALTER TABLE {name} RENAME CONSTRAINT uq_{name}_key TO uq_{name}_key_old")
    op.create_table(
        tmp,
        *columns,
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=f"fk_{name}_org_id_orgs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("org_id", "bucket_start", *DIMENSIONS, name=f"uq_{name}_key"),
    )
    plain = ", ".join(_plain_names())
    op.execute(
        f"INSERT INTO {tmp} ({plain}, {', '.join(sketch_names)}) "
        f"SELECT {plain}, {sketch_sql} FROM {name}"
    )
    op.drop_table(name)
    op.rename_table(tmp, name)


def _sqlite_functions() -> None:
    raw = op.get_bind().connection.driver_connection

    def pack(*counts: int) -> bytes:
        number = sum(int(c) << (SQLITE_BIN_BITS * i) for i, c in enumerate(counts))
        return number.to_bytes((number.bit_length() + 7) // 8, "little")

    def unpack(blob, index: int) -> int:
        number = int.from_bytes(blob, "little") if blob else 0
        return (number >> (SQLITE_BIN_BITS * index)) & ((1 << SQLITE_BIN_BITS) - 1)

    raw.create_function("obs_pack_bins_0009", BINS, pack, deterministic=True)
    raw.create_function("obs_unpack_bin_0009", 2, unpack, deterministic=True)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # The merge: numeric_add as the step needs no per-row state beyond the running total.
        op.execute(
            "CREATE OR REPLACE AGGREGATE obs_sketch_sum(numeric) (SFUNC = numeric_add, "
            "STYPE = numeric, COMBINEFUNC = numeric_add, PARALLEL = SAFE)"
        )
        packed = " + ".join(
            f"CAST(lat_{i:02d} AS NUMERIC) * 1e{PG_BIN_DIGITS * i}" for i in range(BINS)
        )
    else:
        _sqlite_functions()
        packed = f"obs_pack_bins_0009({', '.join(f'lat_{i:02d}' for i in range(BINS))})"
    columns = [
        *_key_columns(),
        sa.Column("latency_sketch", SKETCH_TYPE, nullable=False),
        *_measure_columns(MEASURES),
    ]
    for grain in GRAINS:
        _rewrite(grain, columns, packed, ["latency_sketch"])


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        bins = [
            f"CAST(mod(trunc(latency_sketch / 1e{PG_BIN_DIGITS * i}), 1e{PG_BIN_DIGITS}) AS INTEGER)"
            for i in range(BINS)
        ]
    else:
        _sqlite_functions()
        bins = [f"obs_unpack_bin_0009(latency_sketch, {i})" for i in range(BINS)]
    columns = [*_key_columns(), *_measure_columns(OLD_MEASURES), *_bin_columns()]
    for grain in GRAINS:
        _rewrite(grain, columns, ", ".join(bins), [c.name for c in _bin_columns()])
    if postgres:
        op.execute("DROP AGGREGATE IF EXISTS obs_sketch_sum(numeric)")
