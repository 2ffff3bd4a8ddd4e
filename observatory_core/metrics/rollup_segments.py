"""Cutting a range into rollup segments: whole days, hours and minutes for the inside of
[start, end), raw spans for the ragged edges (the rollup path's plan, `metrics/rollup_path.py`;
the actor rollups and the counts before a read cut ranges the same way)."""

from __future__ import annotations

from datetime import datetime, timedelta

from observatory_core.base.zones import Bucketing
from observatory_core.storage.schema import ROLLUP_GRAINS
from observatory_core.storage.types import EPOCH


def _floor(t: datetime, seconds: int) -> datetime:
    return t - timedelta(microseconds=(t - EPOCH) // timedelta(microseconds=1) % (seconds * 10**6))


def _ceil(t: datetime, seconds: int) -> datetime:
    floor = _floor(t, seconds)
    return floor if floor == t else floor + timedelta(seconds=seconds)


def plan_segments(
    start: datetime, end: datetime, grains: list[str]
) -> list[tuple[str | None, datetime, datetime]]:
    """[(grain or None for raw spans, from, to)] covering [start, end) exactly once."""
    if start >= end:
        return []
    if not grains:
        return [(None, start, end)]
    seconds = ROLLUP_GRAINS[grains[0]]
    inner_start, inner_end = _ceil(start, seconds), _floor(end, seconds)
    if inner_start >= inner_end:
        return plan_segments(start, end, grains[1:])
    return [
        *plan_segments(start, inner_start, grains[1:]),
        (grains[0], inner_start, inner_end),
        *plan_segments(inner_end, end, grains[1:]),
    ]


def usable_grains(bucket_seconds: int | None, bucketing: Bucketing | None = None) -> list[str]:
    """Grains whose rows fall wholly inside one query bucket, coarsest first. On a zone's clock
    that is the grains its bucket edges align to: hours for New York's days, minutes for
    Kolkata's (docs/metrics.md, "Time zones")."""
    grains = sorted(ROLLUP_GRAINS, key=ROLLUP_GRAINS.get, reverse=True)
    if bucketing is not None:
        return [g for g in grains if bucketing.aligned_to(ROLLUP_GRAINS[g])]
    if bucket_seconds is None:
        return grains
    return [g for g in grains if bucket_seconds % ROLLUP_GRAINS[g] == 0]
