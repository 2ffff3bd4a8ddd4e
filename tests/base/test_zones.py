"""Bucket edges on a zone's clock (`base.zones`), checked against polars' own zone arithmetic."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.base.zones import Bucketing, Zone, ZoneError, floor, parse_zone
from tests.metrics.reference import bucket_column

ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Europe/Berlin"]
BASES = [datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)]


@pytest.mark.parametrize("seconds", [60, 300, 3600, 86_400, 604_800])
@pytest.mark.parametrize("zone", ZONES)
def test_floor_matches_polars_convert_then_truncate(zone, seconds):
    rng = random.Random(seconds)
    times = [
        base + timedelta(microseconds=rng.randrange(-3 * 86_400 * 10**6, 3 * 86_400 * 10**6))
        for base in BASES
        for _ in range(2000)
    ]
    frame = pl.DataFrame({"t": times}, schema={"t": pl.Datetime("us", "UTC")})
    want = frame.select(bucket_column("t", seconds, zone))["bucket"].to_list()
    z = Zone(zone)
    assert [floor(t, seconds, z) for t in times] == want


@pytest.mark.parametrize("zone", ZONES)
def test_edges_hold_every_floor_once(zone):
    z = Zone(zone)
    start, end = BASES[0] - timedelta(days=9, minutes=7), BASES[0] + timedelta(days=10)
    for seconds in (3600, 86_400, 604_800):
        b = Bucketing.over(start, end, seconds, z)
        starts = b.starts
        assert starts == sorted(set(starts))
        assert starts[0] <= start and b.edges[-1] >= int(end.timestamp() * 1e6)
        t = start
        while t < end:
            assert floor(t, seconds, z) in starts
            t += timedelta(minutes=37)


def test_new_york_days_around_the_changes():
    z = Zone("America/New_York")
    spring = Bucketing.over(
        datetime(2026, 3, 7, 12, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC), 86_400, z
    )
    lengths = [(b - a) / 3.6e9 for a, b in zip(spring.edges, spring.edges[1:], strict=False)]
    assert lengths == [24, 23, 24]
    autumn = Bucketing.over(
        datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC), 86_400, z
    )
    lengths = [(b - a) / 3.6e9 for a, b in zip(autumn.edges, autumn.edges[1:], strict=False)]
    assert lengths == [24, 25, 24]
    # New York's days are whole UTC hours; Kathmandu's are whole minutes (and quarter hours)
    assert spring.aligned_to(3600) and not spring.aligned_to(86_400)
    kathmandu = Bucketing.over(
        BASES[0], BASES[0] + timedelta(days=2), 86_400, Zone("Asia/Kathmandu")
    )
    assert kathmandu.aligned_to(900) and not kathmandu.aligned_to(3600)


def test_hours_are_uniform_in_whole_hour_zones_only():
    start, end = BASES[1] - timedelta(days=1), BASES[1] + timedelta(days=1)
    assert Bucketing.over(start, end, 3600, Zone("America/New_York")).uniform
    assert not Bucketing.over(start, end, 3600, Zone("Asia/Kolkata")).uniform
    assert not Bucketing.over(start, end, 604_800, Zone("UTC")).uniform  # weeks start on Monday


def test_names_are_checked():
    assert parse_zone(None).is_utc and parse_zone("").is_utc
    assert parse_zone(" Asia/Kolkata ").name == "Asia/Kolkata"
    for bad in ("Mars/Olympus", "../etc/passwd", "America"):
        with pytest.raises(ZoneError, match="IANA name"):
            Zone(bad)


@pytest.mark.parametrize("seconds", [60, 300, 3600, 86_400])
def test_utc_edges_by_arithmetic_are_the_walked_edges(seconds):
    """UTC buckets up to a day are cut by arithmetic (`Bucketing.over`): the same edges as
    walking the clock bucket by bucket (`bucket_edges`), for ragged and aligned ranges alike."""
    from observatory_core.base.zones import UTC_ZONE, bucket_edges

    rng = random.Random(seconds)
    width = seconds * 10**6
    starts = [
        BASES[1],
        BASES[1] + timedelta(microseconds=1),
        datetime(1969, 12, 31, 23, tzinfo=UTC),
    ]
    starts += [
        BASES[0] + timedelta(microseconds=rng.randrange(-(10**13), 10**13)) for _ in range(300)
    ]
    for start in starts:
        for length in (0, 1, width - 1, width, width + 1, rng.randrange(0, 50 * width)):
            end = start + timedelta(microseconds=length)
            walked = [
                int((e - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
                for e in bucket_edges(start, end, seconds, UTC_ZONE)
            ]
            assert list(Bucketing.over(start, end, seconds, UTC_ZONE).edges) == walked
