"""A statement's rows as a polars frame, fast for the span store's array columns.

Integer array columns (the span store's latency bins came back as two per row before they
became one text of (bin, count) pairs, `dialect.bin_map_pairs`: docs/span-store-internals.md,
"Metrics on rollups"; other array columns still may). Polars types a column of Python lists element
by element (a Series per row): ~125 ms of a 30-day hourly series by model over 7,438 rows at 100k
spans, more than the statement itself. An integer array column is built here from its flat values
and offsets instead (~6 ms), the same values and type (`List(Int64)`); anything else goes the
general way.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import polars as pl
import pyarrow as pa


def _int_lists(values: list) -> pl.Series | None:
    """`values` (one list or tuple of ints per row, none missing) as a `List(Int64)` series,
    else None (the caller types the column itself)."""
    if not values or not all(isinstance(v, list | tuple) for v in values):
        return None
    first = next((v[0] for v in values if v), None)
    if type(first) is not int:  # every list empty (typed Null then), or not integers
        return None
    flat = list(chain.from_iterable(values))
    # a column's values must all be ints (not bools) for the fast way: a float or a text among
    # them would be cut to an int silently; a None or an integer past Int64 goes polars' way too
    if set(map(type, flat)) != {int}:
        return None
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    try:
        flat_array = np.array(flat, dtype=np.int64)
    except OverflowError:
        return None
    array = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat_array))
    return pl.Series(array).cast(pl.List(pl.Int64))


def frame_of(columns: list[str], rows: list[tuple]) -> pl.DataFrame:
    """`rows` (the driver's tuples) as a frame with `columns`, polars typing each column."""
    if not rows:
        return pl.DataFrame(schema=columns)
    data: dict[str, object] = {}
    for name, values in zip(columns, zip(*rows, strict=True), strict=True):
        values = list(values)
        lists = _int_lists(values)
        data[name] = values if lists is None else lists.alias(name)
    return pl.DataFrame(data, strict=False)
