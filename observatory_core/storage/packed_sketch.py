"""The latency sketch of a rollup row as one packed integer, merged by the database.

The 64 bin counts c_i are stored as one number, sum(c_i * BASE**i): adding two such numbers adds
the sketches bin by bin, so merging rows is one addition per row instead of 64. (With 64 integer
columns, PostgreSQL spent ~65 ms per 46k rows on the per-column sums alone, and deformed rows
two-thirds made of bins.) Each bin holds up to BASE - 1 spans per merged group (about 10^12);
no real group comes near.

- PostgreSQL: NUMERIC, base 10^12 (three base-10000 digits per bin), merged by the aggregate
  `obs_sketch_sum` (migration 0009: `numeric_add` as its step, ~40% cheaper than `sum`), read
  back in `numeric_send`'s binary form and unpacked with numpy.
- SQLite: a BLOB holding the integer little-endian, base 2^40 (five bytes per bin), merged by
  Python aggregates registered on each connection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import LargeBinary
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from observatory_core.metrics.sketch import BINS

# The column type: what the schema and its migration both use.
SKETCH_TYPE = LargeBinary().with_variant(postgresql.NUMERIC(), "postgresql")

PG_BIN_DIGITS = 12  # decimal digits per bin: three of NUMERIC's base-10000 digits
SQLITE_BIN_BITS = 40  # bits per bin: five bytes
_SQLITE_WEIGHTS = 256 ** np.arange(SQLITE_BIN_BITS // 8, dtype=np.int64)
_SQLITE_BYTES = BINS * SQLITE_BIN_BITS // 8


class sketch_of(FunctionElement):
    """Aggregate: the packed sketch of the spans in a group, from each span's bin (NULL skipped)."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_of"
    sql = {
        "postgresql": "coalesce(obs_sketch_sum(CAST('1e' || (({0}) * "
        + str(PG_BIN_DIGITS)
        + ") AS NUMERIC)), 0)",
        "sqlite": "obs_sketch_of({0})",
    }


class sketch_merge(FunctionElement):
    """Aggregate: the sum of packed sketches (the merged sketch); empty sketch for no rows."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_merge"
    sql = {"postgresql": "coalesce(obs_sketch_sum({0}), 0)", "sqlite": "obs_sketch_sum({0})"}


class sketch_add(FunctionElement):
    """Two packed sketches added (for upserts into an existing rollup row)."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_add"
    sql = {"postgresql": "({0} + {1})", "sqlite": "obs_sketch_add({0}, {1})"}


class sketch_out(FunctionElement):
    """A packed sketch as bytes for `unpack` (PostgreSQL's binary NUMERIC form; SQLite's blob)."""

    type = LargeBinary()
    inherit_cache = True
    name = "sketch_out"
    sql = {"postgresql": "numeric_send({0})", "sqlite": "{0}"}


@compiles(sketch_of)
@compiles(sketch_merge)
@compiles(sketch_add)
@compiles(sketch_out)
def _sketch_sql(element, compiler, **kw):
    """Each construct's SQL for the dialect, its arguments filled in."""
    args = [compiler.process(c, **kw) for c in element.clauses]
    return element.sql[compiler.dialect.name].format(*args)


def unpack(values: Sequence[bytes | None], dialect: str) -> np.ndarray:
    """Packed sketches (from `sketch_out`) -> an int matrix, one row of BINS counts each."""
    if dialect == "postgresql":
        return _unpack_numeric(values)
    padded = b"".join((v or b"").ljust(_SQLITE_BYTES, b"\0") for v in values)
    cells = np.frombuffer(padded, dtype=np.uint8).astype(np.int64)
    return cells.reshape(len(values), BINS, SQLITE_BIN_BITS // 8) @ _SQLITE_WEIGHTS


_EMPTY_NUMERIC = b"\0" * 8  # numeric_send of 0: no digits
_DIGIT_WORTH = np.array([1, 10**4, 10**8], dtype=np.int64)  # of a bin's three NUMERIC digits


def _unpack_numeric(values: Sequence[bytes | None]) -> np.ndarray:
    """numeric_send's layout: ndigits, weight, sign, dscale (int16 each), then ndigits base-10000
    digits, the first worth 10000**weight. Digit position p of the integer lands in bin p // 3.
    Every value is 8 + 2 * ndigits bytes, so all of them read as one int16 array."""
    n = len(values)
    values = [v or _EMPTY_NUMERIC for v in values]  # NULL reads as the empty sketch
    words = np.frombuffer(b"".join(values), dtype=">i2").astype(np.int64)
    sizes = np.fromiter(map(len, values), dtype=np.int64, count=n) // 2
    heads = np.cumsum(sizes) - sizes
    ndigits, weight = words[heads], words[heads + 1]
    total = int(ndigits.sum())
    rows = np.repeat(np.arange(n), ndigits)
    k = np.arange(total) - np.repeat(np.cumsum(ndigits) - ndigits, ndigits)  # digit's index
    digits = words[np.repeat(heads + 4, ndigits) + k]
    position = weight[rows] - k
    whole = position >= 0  # digits after the decimal point are zeros of a scaled integer
    cell = (rows * BINS + position // 3)[whole]
    worth = (digits * _DIGIT_WORTH[position % 3])[whole]
    # float64 adds exactly here: a bin's count stays far below 2**53
    counts = np.bincount(cell, weights=worth, minlength=n * BINS)
    return counts.astype(np.int64).reshape(n, BINS)


# SQLite's side: Python integers hold the packed number exactly.


def _from_blob(value) -> int:
    return int.from_bytes(value, "little") if value else 0


def _to_blob(number: int) -> bytes:
    return number.to_bytes((number.bit_length() + 7) // 8, "little")


class SketchOf:
    """`obs_sketch_of(bin)`: the packed sketch of a group's spans."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, bin_) -> None:
        if bin_ is not None:
            self.total += 1 << (SQLITE_BIN_BITS * int(bin_))

    def finalize(self) -> bytes:
        return _to_blob(self.total)


class SketchSum:
    """`obs_sketch_sum(sketch)`: merged sketches."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, value) -> None:
        self.total += _from_blob(value)

    def finalize(self) -> bytes:
        return _to_blob(self.total)


def sqlite_sketch_add(a, b) -> bytes:
    return _to_blob(_from_blob(a) + _from_blob(b))


def register_sqlite(dbapi_conn) -> None:
    """The SQLite functions above, on one connection."""
    dbapi_conn.create_aggregate("obs_sketch_of", 1, SketchOf)
    dbapi_conn.create_aggregate("obs_sketch_sum", 1, SketchSum)
    dbapi_conn.create_function("obs_sketch_add", 2, sqlite_sketch_add, deterministic=True)
