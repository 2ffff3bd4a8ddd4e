"""Buckets that are not over: the last bucket of a series ending now (or mid-bucket), and the
first when the range starts mid-bucket, hold only part of their period. Drawn as full they read
as a sudden drop, so a result says which they are and how many seconds each covers
(docs/metrics.md, "Partial buckets"); charts draw them lighter and comparisons never weigh
them as full.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from observatory_core.base.zones import Bucketing

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // _US


def _at(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def partial_buckets(
    start: datetime,
    end: datetime,
    now: datetime,
    bucket_seconds: int,
    *,
    cut_start: bool = True,
    bucketing: Bucketing | None = None,
) -> dict[datetime, float]:
    """Bucket start -> covered seconds, for each bucket of [start, end) that is not whole:
    cut by the range's start (when `cut_start`: an "all time" range starts at the first span,
    so nothing of its first bucket is missing), by its end, or by the clock (a bucket still
    running at `now`, or after it, covers only what has passed). `bucketing`: buckets on a
    zone's clock, whose days may last 23 or 25 hours (a whole one covers its own length)."""
    if bucketing is not None and not bucketing.uniform:
        return _partial_by_edges(start, end, now, bucketing, cut_start)
    width = bucket_seconds * 1_000_000
    lo, hi, seen = _us(start), _us(end), min(_us(end), _us(now))
    first = lo - lo % width
    from_us = lo if cut_start else first
    candidates = {first}
    b = max(seen - seen % width, first)
    while b < hi:
        candidates.add(b)
        b += width
    out: dict[datetime, float] = {}
    for b in sorted(candidates):
        covered = max(0, min(b + width, seen) - max(b, from_us))
        if covered < width:
            out[_at(b)] = covered / 1_000_000
    return out


def _partial_by_edges(
    start: datetime, end: datetime, now: datetime, bucketing: Bucketing, cut_start: bool
) -> dict[datetime, float]:
    edges = bucketing.edges
    hi, seen = _us(end), min(_us(end), _us(now))
    from_us = _us(start) if cut_start else edges[0]
    out: dict[datetime, float] = {}
    for b, b_end in zip(edges, edges[1:], strict=False):
        if b >= hi:
            break
        covered = max(0, min(b_end, seen) - max(b, from_us))
        if covered < b_end - b:
            out[_at(b)] = covered / 1_000_000
    return out


def mark(frame: pl.DataFrame, partial: dict[datetime, float]) -> pl.DataFrame:
    """`frame` (with a `bucket` column) with `partial` (true or false) and `covered_seconds`
    (the seconds a partial bucket covers; null for a whole one)."""
    marks = pl.DataFrame(
        {"bucket": list(partial), "covered_seconds": list(partial.values())},
        schema={"bucket": pl.Datetime("us", "UTC"), "covered_seconds": pl.Float64},
    )
    return frame.join(marks, on="bucket", how="left").with_columns(
        pl.col("covered_seconds").is_not_null().alias("partial")
    )


def covered_text(covered_seconds: float, bucket_seconds: int) -> str:
    """How much of a partial bucket has data, as a hover says it: "partial: 40% of the bucket"."""
    share = covered_seconds / bucket_seconds
    return f"partial: {share:.0%} of the {_word(bucket_seconds)}"


def _word(bucket_seconds: int) -> str:
    return {60: "minute", 300: "5 minutes", 3600: "hour", 86_400: "day", 604_800: "week"}.get(
        bucket_seconds, "bucket"
    )
