"""rollups: the latency sketch becomes sparse, 870 log bins within ±1%; recompute the rollups

Revision ID: 0015
Revises: 0014

The 64 bins of 0009 read percentiles back within ±11.1%; the sketch now has a bin per factor of
~1.0202 between 0.1 ms and 1 hour (within ±1%), stored sparse as (bin, count) records in plain
bytes (storage/packed_sketch.py, storage/latency_bins.py). PostgreSQL's column becomes a bytea
and gets `obs_sketch_compact`; SQLite's BLOB keeps its type. The old sketches cannot be refined,
so they are emptied and the rollups recomputed from the spans by the upgrade that asks for it
(storage/migrate.py, rollups/upgrade.py), as 0012 did.
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

GRAINS = ("1min", "1hour", "1day")

# Sums each bin's records and writes one record per bin, ascending (a count over 65535 takes
# several records). Records are 4 big-endian bytes: bin << 16 | count.
COMPACT = """
CREATE OR REPLACE FUNCTION obs_sketch_compact(s bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT coalesce(
    string_agg(int4send(bins.b * 65536 + CAST(least(bins.c - k * 65535, 65535) AS integer)),
               ''::bytea ORDER BY bins.b, k),
    ''::bytea)
  FROM (
    SELECT get_byte(s, i) * 256 + get_byte(s, i + 1) AS b,
           sum(get_byte(s, i + 2) * 256 + get_byte(s, i + 3)) AS c
    FROM generate_series(0, length(s) - 4, 4) AS i
    GROUP BY 1
  ) AS bins
  CROSS JOIN LATERAL generate_series(0, CAST((bins.c - 1) / 65535 AS bigint)) AS k
  WHERE bins.c > 0
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(COMPACT)
        for grain in GRAINS:
            op.execute(
                f"ALTER TABLE rollup_{grain} ALTER COLUMN latency_sketch TYPE bytea USING ''::bytea"
            )
        op.execute("DROP AGGREGATE IF EXISTS obs_sketch_sum(numeric)")
    else:
        for grain in GRAINS:
            op.execute(f"UPDATE rollup_{grain} SET latency_sketch = x''")
    op.get_context().config.attributes["rebuild_rollups"] = True


class _OldSketchSum:
    """0009's SQLite merge (the packed number, a little-endian BLOB, summed), which the
    downgrades below this revision (0014's) call by name."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, value) -> None:
        self.total += int.from_bytes(value, "little") if value else 0

    def finalize(self) -> bytes:
        return self.total.to_bytes((self.total.bit_length() + 7) // 8, "little")


def downgrade() -> None:
    # The sketches are emptied (0009's empty packed number); `rollups rebuild` at the older
    # revision fills them again.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE AGGREGATE obs_sketch_sum(numeric) (SFUNC = numeric_add, "
            "STYPE = numeric, COMBINEFUNC = numeric_add, PARALLEL = SAFE)"
        )
        for grain in GRAINS:
            op.execute(
                f"ALTER TABLE rollup_{grain} ALTER COLUMN latency_sketch TYPE numeric USING 0"
            )
        op.execute("DROP FUNCTION IF EXISTS obs_sketch_compact(bytea)")
    else:
        for grain in GRAINS:
            op.execute(f"UPDATE rollup_{grain} SET latency_sketch = x''")
        raw = op.get_bind().connection.driver_connection
        raw.create_aggregate("obs_sketch_sum", 1, _OldSketchSum)
