"""Anomaly rules: "unusual for this hour of the week" instead of a fixed number.

A rule's series over its window is compared with the same series over the same window at the
same time of the week in each of the last N weeks (the baseline). Medians and the median
absolute deviation (MAD) keep one odd week (last week's incident, a holiday) from moving the
baseline: the rule breaches when the value is more than k robust deviations
(1.4826 x MAD, the standard deviation for normal data) from the median, in the rule's
direction. Two guards keep noise out:

- the robust deviation never falls below `FLOOR_SHARE` of the median (nor, for a ratio, below
  one percentage point), so a flat baseline (four weeks of nearly the same value) does not
  fire on a small wiggle;
- a past week counts only if it had the rule's minimum requests, and at least `MIN_WEEKS`
  weeks must count; otherwise there is no baseline and the rule does not judge.

Every number is read through the metrics engine with the rule's `FilterSpec` (the baseline
windows are old, so the engine answers them from the rollups where it can); weeks are 7 x 24
hours, so on a daylight-saving change the baseline is an hour off on the local clock.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

MAD_SCALE = 1.4826
FLOOR_SHARE = 0.2
RATIO_FLOOR = 0.01
MIN_WEEKS = 2
WEEK = timedelta(days=7)
DIRECTIONS = ("above", "below", "both")
DIRECTION_SYMBOL = {"above": ">", "below": "<", "both": "<>"}
DEFAULT_WEEKS, MIN_RULE_WEEKS, MAX_RULE_WEEKS = 4, 2, 12
DEFAULT_SENSITIVITY = 3.0


@dataclass(frozen=True)
class Baseline:
    """The usual value for this hour of the week and how far from it counts as unusual."""

    median: float
    spread: float  # the robust standard deviation, floored
    weeks: int  # how many past weeks it is made of

    def band(self, sensitivity: float) -> tuple[float, float]:
        return self.median - sensitivity * self.spread, self.median + sensitivity * self.spread


def baseline_of(values: Iterable[float | None], *, ratio: bool = False) -> Baseline | None:
    """The baseline of the past weeks' values (None: a week without enough requests), or None
    when fewer than `MIN_WEEKS` weeks count."""
    kept = [float(v) for v in values if v is not None]
    if len(kept) < MIN_WEEKS:
        return None
    median = statistics.median(kept)
    mad = statistics.median(abs(v - median) for v in kept)
    floor = max(FLOOR_SHARE * abs(median), RATIO_FLOOR if ratio else 0.0)
    return Baseline(median, max(MAD_SCALE * mad, floor), len(kept))


def outside(
    value: float | None, baseline: Baseline | None, sensitivity: float, direction: str
) -> bool:
    """Whether `value` leaves the usual range in the rule's direction (no value or no baseline:
    the rule does not judge)."""
    if baseline is None:
        return False
    return band_breaches(value, *baseline.band(sensitivity), direction)


def is_ratio(series: str) -> bool:
    from observatory_core.semantic.metrics import METRICS

    metric = METRICS.get(series.split(".")[0])
    return metric is not None and metric.unit == "ratio"


def past_windows(start: datetime, end: datetime, weeks: int) -> list[tuple[datetime, datetime]]:
    """The same window 1..`weeks` weeks back, newest first."""
    return [(start - k * WEEK, end - k * WEEK) for k in range(1, weeks + 1)]


def with_baseline(
    frame: pl.DataFrame,
    *,
    weeks: int,
    min_requests: int,
    sensitivity: float,
    ratio: bool,
) -> pl.DataFrame:
    """A bucketed frame (bucket, group, value, requests) with each bucket's baseline read from
    the same frame: `median`, `spread`, and the band `low` to `high` (null without a
    baseline)."""
    seen: dict[tuple[str, datetime], float | None] = {
        (g, b): (v if r >= min_requests else None)
        for g, b, v, r in frame.select("group", "bucket", "value", "requests").iter_rows()
    }
    medians, spreads, lows, highs = [], [], [], []
    for g, b in frame.select("group", "bucket").iter_rows():
        past = [seen.get((g, b - k * WEEK)) for k in range(1, weeks + 1)]
        base = baseline_of(past, ratio=ratio)
        low, high = base.band(sensitivity) if base else (None, None)
        medians.append(base.median if base else None)
        spreads.append(base.spread if base else None)
        lows.append(low)
        highs.append(high)
    return frame.with_columns(
        pl.Series("median", medians, dtype=pl.Float64),
        pl.Series("spread", spreads, dtype=pl.Float64),
        pl.Series("low", lows, dtype=pl.Float64),
        pl.Series("high", highs, dtype=pl.Float64),
    )


def band_breaches(
    value: float | None, low: float | None, high: float | None, direction: str
) -> bool:
    """`outside` for a frame row that carries its band."""
    if value is None or low is None or high is None:
        return False
    return {"above": value > high, "below": value < low, "both": value > high or value < low}[
        direction
    ]
