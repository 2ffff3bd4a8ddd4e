"""The merged latency bins of rollup rows: read from each store's form (packed sketches, or
the span store's maps as text or arrays), checked whole (rows the span store wrote before it
kept bins have none) and read as percentiles without building a row x bin matrix."""

from __future__ import annotations

import numpy as np
import polars as pl

from observatory_core.metrics.catalog import PERCENTILES, Agg
from observatory_core.semantic.metrics import sketched
from observatory_core.storage.latency_bins import BINS, representative
from observatory_core.storage.packed_sketch import decode


def merged_bins(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The merged latency bins of each row, as `packed_sketch.decode` gives them (row, bin,
    count; sorted by row then bin), from the packed sketches (`bins`) or, on the span store,
    the pairs' text (`bin_pairs`) or the bins and their counts as two arrays per row (`bins`,
    `bin_counts`); None when the statement merged no bins."""
    if BIN_PAIRS in frame.columns:
        return _pairs(frame[BIN_PAIRS])
    if "bins" not in frame.columns:
        return None
    if "bin_counts" not in frame.columns:
        return decode(frame["bins"].to_list())
    if frame.height == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    keys = frame["bins"].cast(pl.List(pl.Int64))
    lengths = keys.list.len().fill_null(0).to_numpy()
    rows = np.repeat(np.arange(frame.height, dtype=np.int64), lengths)
    # an empty list explodes to one null: the nulls are the empty rows, never a bin
    bins = keys.explode().drop_nulls().to_numpy().astype(np.int64)
    counts = frame["bin_counts"].cast(pl.List(pl.Int64)).explode().drop_nulls().to_numpy()
    order = np.lexsort((bins, rows))
    return rows[order], bins[order], counts.astype(np.int64)[order]


# The span store's merged bins, one hexadecimal text per row (`dialect.bin_map_pairs`).
BIN_PAIRS = "bin_pairs"
_PAIR = np.dtype([("bin", "<u2"), ("count", "<u8")])  # 10 bytes, as the engine writes them


def _pairs(texts: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, bin, count) of the rows' `bin_map_pairs` texts, read as one buffer."""
    texts = texts.cast(pl.Utf8).fill_null("")
    lengths = texts.str.len_bytes().to_numpy().astype(np.int64) // (2 * _PAIR.itemsize)
    pairs = np.frombuffer(bytes.fromhex("".join(texts.to_list())), dtype=_PAIR)
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    bins, counts = pairs["bin"].astype(np.int64), pairs["count"].astype(np.int64)
    # ascending within each row already (sumMap's keys); sorted only if not
    next_row, next_bin = np.diff(rows), np.diff(bins)
    if not ((next_row > 0) | ((next_row == 0) & (next_bin > 0))).all():
        order = np.lexsort((bins, rows))
        rows, bins, counts = rows[order], bins[order], counts[order]
    return rows, bins, counts


def rows_with_bins(
    frame: pl.DataFrame, bins: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
) -> np.ndarray | None:
    """Per row: whether its merged bins hold each span its sketched measure counts. Rollup rows
    the span store wrote before it kept bins (schema version 3) have none until
    `clickhouse-rebuild-rollups` fills them, and their spans may be gone (retention), so a
    percentile from the bins present would be a wrong number. None: no bins were merged."""
    count = f"{sketched().rollup.column}_count"
    bins = merged_bins(frame) if bins is None else bins
    if bins is None or count not in frame.columns:
        return None
    rows, _, counts = bins
    held = np.bincount(rows, weights=counts, minlength=frame.height).astype(np.int64)
    wanted = frame[count].cast(pl.Int64).fill_null(0).to_numpy()
    return held == wanted


def without_partial_bins(
    merged: pl.DataFrame,
    finished: pl.DataFrame,
    series: tuple[str, ...],
    bins: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[pl.DataFrame, int]:
    """`finished` (finalize's answer for `merged`, row for row) with the percentiles of rows
    whose bins are incomplete left empty; counts, sums and averages stay (the rollups hold
    them whole). Returns the frame and how many rows lost their percentiles."""
    whole = rows_with_bins(merged, bins)
    if whole is None or whole.all():
        return finished, 0
    mask = pl.Series(whole)
    gaps = [
        pl.when(mask).then(pl.col(s)).otherwise(None).alias(s)
        for s in series
        if Agg(s.split(".")[1]) in PERCENTILES and s in finished.columns
    ]
    return finished.with_columns(gaps), int((~whole).sum())


_REPRESENTATIVES = np.array([representative(i) for i in range(BINS)])


def percentiles_from_sketches(
    sketch: tuple[np.ndarray, np.ndarray, np.ndarray], n: int, fraction: float
) -> np.ndarray:
    """percentile_cont read from `n` decoded sketches (`packed_sketch.decode`: row, bin and
    count, sorted by row then bin): interpolating between the two ranks, like SQL, each bin
    standing for its representative value; NaN for empty rows. Sparse: the work is the bins
    that hold spans, never n x BINS."""
    rows, bins, counts = sketch
    if n == 0:
        return np.array([], dtype=float)
    cum = np.cumsum(counts)  # across all rows: each row's part starts where the last ended
    total = np.bincount(rows, weights=counts, minlength=n).astype(np.int64)
    before = np.cumsum(total) - total  # spans of the rows before each row
    rank = (np.maximum(total, 1) - 1) * fraction
    low, high = np.floor(rank), np.ceil(rank)
    # the first of the row's entries whose running count passes the rank
    low_at = np.searchsorted(cum, before + low, side="right")
    high_at = np.searchsorted(cum, before + high, side="right")
    last = max(len(bins) - 1, 0)
    reps = _REPRESENTATIVES[bins] if len(bins) else np.zeros(1)
    low_value = reps[np.minimum(low_at, last)]
    high_value = reps[np.minimum(high_at, last)]
    value = low_value + (high_value - low_value) * (rank - low)
    return np.where(total > 0, value, np.nan)
