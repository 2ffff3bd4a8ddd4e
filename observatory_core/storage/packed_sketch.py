"""The latency sketch of a rollup row: sparse (bin, count) records, merged by concatenation.

The encoding is plain bytes, the same on every store (a BLOB on SQLite, a bytea on
PostgreSQL; a ClickHouse `String` later): a sequence of 4-byte big-endian unsigned records,
each `bin << 16 | count` (bin < 2^15, see storage/latency_bins.py; 1 <= count <= 65535).
A sketch's count in a bin is the sum of the counts of its records for that bin: order and
repeats do not matter, so two sketches concatenated are their merge, which every database
does in SQL (`sketch_merge`: PostgreSQL's `string_agg`). The empty string is the empty
sketch. Stored rows are compacted (`sketch_compact`): one record per bin, ascending, a bin
holding more than 65535 spans using several records. A row holds only the bins its spans
fell in (4 bytes each), not all `BINS`.

Reads concatenate and decode in numpy (`decode`); writes compact in the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from sqlalchemy import LargeBinary
from sqlalchemy.sql.expression import FunctionElement

from observatory_core.storage.latency_bins import BINS

# The column type: what the schema and its migration both use.
SKETCH_TYPE = LargeBinary()
RECORD_BYTES = 4
MAX_COUNT = 0xFFFF  # per record; a larger count takes several records
_RECORD = np.dtype(">u4")
# `decode` sums into a dense rows x BINS array when it has at most this many cells per record
_DENSE_PER_RECORD = 2


class sketch_of(FunctionElement):
    """Aggregate: the compacted sketch of the spans in a group, from each span's bin (NULL
    skipped); the empty sketch for no spans."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_of"


class sketch_merge(FunctionElement):
    """Aggregate: the sketches of a group concatenated (their merge, not compacted: for
    reads, which decode it at once; wrap in `sketch_compact` to store it)."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_merge"


class sketch_compact(FunctionElement):
    """One record per bin, ascending: the form a stored row keeps."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_compact"


class sketch_add(FunctionElement):
    """Two sketches merged and compacted (for upserts into an existing rollup row)."""

    type = SKETCH_TYPE
    inherit_cache = True
    name = "sketch_add"


SKETCH_CONSTRUCTS = (sketch_of, sketch_merge, sketch_compact, sketch_add)


def encode(counts: dict[int, int] | np.ndarray) -> bytes:
    """Counts per bin (a {bin: count} map or a dense row of `BINS`) -> the compacted sketch."""
    if isinstance(counts, np.ndarray):
        counts = {int(b): int(c) for b, c in enumerate(counts) if c}
    records = []
    for b in sorted(counts):
        left = int(counts[b])
        while left > 0:
            take = min(left, MAX_COUNT)
            records.append(b << 16 | take)
            left -= take
    return np.array(records, dtype=_RECORD).tobytes()


def compact(value: bytes | None) -> bytes:
    """A sketch with its records summed per bin and sorted (what rows store)."""
    rows, bins, counts = decode([value])
    return encode(dict(zip(bins.tolist(), counts.tolist(), strict=True)))


def decode(values: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sketches -> (row index, bin, count) arrays, one entry per (row, bin) that holds spans,
    sorted by row then bin; NULL reads as the empty sketch.

    Sparse: the records are keyed by (row, bin) and sorted, then the counts of equal keys summed,
    so the work is the records, never a rows x `BINS` matrix nor each row's whole range of bins
    (a merged row is many sorted runs, which the stable sort merges). Twice as fast as summing
    into each row's stretch of bins for 30 days of hourly merges (11k-35k rows, 600k records)."""
    values = [v if type(v) is bytes else bytes(v or b"") for v in values]
    n = len(values)
    words = np.frombuffer(b"".join(values), dtype=_RECORD).astype(np.int64)
    if not len(words):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    sizes = np.fromiter(map(len, values), dtype=np.int64, count=n) // RECORD_BYTES
    rows = np.repeat(np.arange(n, dtype=np.int64), sizes)
    if n * BINS <= _DENSE_PER_RECORD * len(words):
        # Few rows, each the merge of many: summing into a rows x BINS array is cheaper than
        # sorting the records (30 days of hourly buckets, no grouping: ~880k records into 720
        # rows, about a third of the sort's time).
        dense = np.bincount(
            rows * BINS + (words >> 16), weights=words & MAX_COUNT, minlength=n * BINS
        )
        at = np.flatnonzero(dense)
        return at // BINS, at % BINS, dense[at].astype(np.int64)
    # bin < 2**15 (storage/latency_bins.py): the row above it in one integer
    key = (rows << 15) | (words >> 16)
    counts = words & MAX_COUNT
    if len(key) > 1 and not (key[1:] >= key[:-1]).all():  # stored rows alone come sorted
        order = np.argsort(key, kind="stable")
        key, counts = key[order], counts[order]
    first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    counts = np.add.reduceat(counts, first)
    key = key[first]
    return key >> 15, key & 0x7FFF, counts


def dense(values: Sequence[bytes | None]) -> np.ndarray:
    """Sketches -> an int matrix, one row of `BINS` counts each (for a few rows only)."""
    rows, bins, counts = decode(values)
    out = np.zeros((len(values), BINS), dtype=np.int64)
    out[rows, bins] = counts
    return out


def sketch_bytes(bins: Iterable[int | None]) -> bytes:
    """The compacted sketch of some spans' bins (NULL skipped)."""
    counts: dict[int, int] = {}
    for b in bins:
        if b is not None:
            counts[int(b)] = counts.get(int(b), 0) + 1
    return encode(counts)
