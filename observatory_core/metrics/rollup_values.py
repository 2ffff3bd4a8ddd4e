"""Merged rollup partials to the series' values: counts, sums, averages, shares, deviations
and percentiles (from the merged latency bins, `metrics/rollup_bins.py`), the last step of the
rollup path (`metrics/rollup_path.py`) and of several windows' totals (`metrics/totals.py`)."""

from __future__ import annotations

import numpy as np
import polars as pl

from observatory_core.metrics.catalog import METRICS, PERCENTILES, Agg, Kind
from observatory_core.metrics.rollup_bins import merged_bins, percentiles_from_sketches
from observatory_core.storage.latency_bins import BINS
from observatory_core.storage.schema import ROLLUP_COUNTS


def finalize(
    frame: pl.DataFrame,
    series: tuple[str, ...],
    group_by: tuple[str, ...],
    bins: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> pl.DataFrame:
    """Merged partials -> the series values (avg = sum / count, percentiles from the sketch).

    For totals (no buckets, no groups) the merged sketch comes back as `_bins`, its row of
    bin counts. `bins`: `merged_bins(frame)` when the caller has it already (decoded once).
    """
    out: dict[str, pl.Series] = {c: frame[c] for c in group_by}
    if "bucket" in frame.columns:  # microseconds since the epoch (see rollup_select)
        bucket = pl.from_epoch(frame["bucket"].cast(pl.Int64), time_unit="us")
        out = {"bucket": bucket.dt.replace_time_zone("UTC"), **out}
    for g in group_by:
        if g in ("provider", "model"):  # rollups keep NULL as ''
            out[g] = out[g].cast(pl.Utf8).replace("", None)
    counts = [c for c in ROLLUP_COUNTS if c in frame.columns]
    frame = frame.with_columns(pl.col(*counts).fill_null(0))
    bins = merged_bins(frame) if bins is None else bins
    for name in series:
        metric, agg = name.split(".")
        m = METRICS[metric]
        if m.kind == Kind.ROWS:
            col = frame[m.rollup.column].cast(pl.Int64)
        elif m.kind == Kind.SHARE:
            col = _share(frame[m.rollup.column], frame[m.rollup.of], m.rollup.complement)
        else:
            col = _finish_value(frame, m.rollup.column, Agg(agg), bins)
        out[name] = col.alias(name)
    if bins is not None and not group_by and "bucket" not in frame.columns:
        matrix = np.zeros((frame.height, BINS), dtype=np.int64)
        matrix[bins[0], bins[1]] = bins[2]
        out["_bins"] = pl.Series(matrix)
    return pl.DataFrame(out)


def _share(part: pl.Series, whole: pl.Series, complement: bool) -> pl.Series:
    """part / whole (or 1 - that, when `part` counts the other rows); a gap where whole is 0."""
    n = whole.cast(pl.Float64).to_numpy()
    k = part.cast(pl.Float64).to_numpy()
    rate = pl.Series(np.where(n > 0, k / np.maximum(n, 1), np.nan))
    return (1 - rate if complement else rate).fill_nan(None)


def _finish_value(
    frame: pl.DataFrame, m: str, agg: Agg, bins: tuple[np.ndarray, ...] | None
) -> pl.Series:
    """One aggregation of the value measure `m` from its merged partial columns."""
    if agg == Agg.COUNT:
        return frame[f"{m}_count"].cast(pl.Int64)
    if agg == Agg.SUM:
        return frame[f"{m}_sum"].cast(pl.Float64).fill_null(0.0)
    if agg == Agg.AVG:
        count = frame[f"{m}_count"].cast(pl.Float64)
        total = frame[f"{m}_sum"].cast(pl.Float64)
        return pl.Series(
            np.where(
                count.to_numpy() > 0,
                total.fill_null(0).to_numpy() / np.maximum(count.to_numpy(), 1),
                np.nan,
            )
        ).fill_nan(None)
    if agg == Agg.MIN:
        return frame[f"{m}_min"].cast(pl.Float64)
    if agg == Agg.MAX:
        return frame[f"{m}_max"].cast(pl.Float64)
    if agg == Agg.STDDEV:
        return pl.Series(
            stddev_from_sums(
                frame[f"{m}_count"].cast(pl.Float64),
                frame[f"{m}_sum"].cast(pl.Float64),
                frame[f"{m}_sumsq"],
            )
        ).fill_nan(None)
    return pl.Series(percentiles_from_sketches(bins, frame.height, PERCENTILES[agg])).fill_nan(None)


def stddev_from_sums(count: pl.Series, total: pl.Series, sumsq: pl.Series) -> np.ndarray:
    """Sample standard deviation from n, sum and sum of squares (NaN below two values)."""
    n = count.fill_null(0).to_numpy().astype(float)
    s1 = total.cast(pl.Float64).fill_null(0).to_numpy()
    s2 = sumsq.cast(pl.Float64).fill_null(0).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = (s2 - s1 * s1 / n) / (n - 1)
    return np.where(n > 1, np.sqrt(np.maximum(variance, 0.0)), np.nan)
