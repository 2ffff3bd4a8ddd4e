"""The latency sketch of a rollup row as one packed integer, merged by the database.

The 64 bin counts c_i are stored as one number, sum(c_i * BASE**i): adding two such numbers adds
the sketches bin by bin, so merging rows is one addition per row instead of 64. (With 64 integer
columns, PostgreSQL spent ~65 ms per 46k rows on the per-column sums alone, and deformed rows
two-thirds made of bins.) Each bin holds up to BASE - 1 spans per merged group (about 10^12);
no real group comes near.

How each store packs, merges and unpacks (PostgreSQL: NUMERIC, base 10^12; SQLite: a
little-endian BLOB, base 2^40) lives in its module under storage/stores/.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import LargeBinary
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.expression import FunctionElement

from observatory_core.storage.stores import store_for

# The column type: what the schema and its migration both use (a declaration per store).
SKETCH_TYPE = LargeBinary().with_variant(postgresql.NUMERIC(), "postgresql")


class sketch_of(FunctionElement):
    """Aggregate: the packed sketch of the spans in a group, from each span's bin (NULL skipped)."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_of"


class sketch_merge(FunctionElement):
    """Aggregate: the sum of packed sketches (the merged sketch); empty sketch for no rows."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_merge"


class sketch_add(FunctionElement):
    """Two packed sketches added (for upserts into an existing rollup row)."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_add"


class sketch_out(FunctionElement):
    """A packed sketch as bytes for `unpack` (the store's own binary form)."""

    type = LargeBinary()
    inherit_cache = True
    name = "sketch_out"


SKETCH_CONSTRUCTS = (sketch_of, sketch_merge, sketch_add, sketch_out)


def unpack(values: Sequence[bytes | None], dialect: str) -> np.ndarray:
    """Packed sketches (from `sketch_out`) -> an int matrix, one row of BINS counts each.
    `dialect` names the store that packed them."""
    return store_for(dialect).unpack_sketches(values)
