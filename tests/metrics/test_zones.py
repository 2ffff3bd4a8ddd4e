"""Buckets on the reader's clock (docs/metrics.md, "Time zones"): every bucketed figure, raw and
from rollups, against polars (`convert_time_zone`, then `truncate`) in UTC, New York across both
of its 2026 clock changes, and the half- and three-quarter-hour offsets of Kolkata and Kathmandu,
on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.base.errors import UserError
from observatory_core.base.zones import Zone
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery, query_from_json, query_to_json
from tests.helpers import admin_scope, all_spans, empty_database, make_org, span, write
from tests.metrics.conftest import _enrich
from tests.metrics.reference import reference_metrics, reference_trace_metrics
from tests.metrics.test_engine import check
from tests.traces.conftest import build_rows

ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"]
SPRING = datetime(2026, 3, 8, 7, tzinfo=UTC)  # New York: 2 am EST -> 3 am EDT
AUTUMN = datetime(2026, 11, 1, 6, tzinfo=UTC)  # New York: 2 am EDT -> 1 am EST
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
# ragged windows around each change (minutes and seconds off every edge)
WINDOWS = {
    "spring": (
        SPRING - timedelta(days=4, hours=3, minutes=17),
        SPRING + timedelta(days=5, hours=2),
    ),
    "autumn": (AUTUMN - timedelta(days=5, minutes=41), AUTUMN + timedelta(days=4, hours=7)),
}
SERIES = (
    "request_count.count",
    "total_cost.sum",
    "duration_ms.avg",
    "duration_ms.max",
    "error_rate.avg",
    "duration_ms.p95",
)


def _edge_rows(org, project):
    """Spans on and just before the edges of local days and hours in the zones under test."""
    out = []
    for zone in ZONES:
        z = Zone(zone)
        for day in (SPRING, AUTUMN):
            for delta in (-1, 0, 1):
                midnight = z.midnight(z.local(day).date() + timedelta(days=delta))
                for t in (midnight, midnight - timedelta(microseconds=1)):
                    out.append(span(org, project, t, duration_ms=250.0, model="gpt-4o"))
    for t in (SPRING, AUTUMN, AUTUMN + timedelta(hours=1), SPRING - timedelta(microseconds=1)):
        out.append(span(org, project, t, duration_ms=120.0, model="gpt-4o"))
    return out


@pytest.fixture(scope="module")
def zoned_data(db_url):
    engine = empty_database(db_url)
    acme, projects = make_org(engine, "acme", projects=("bot", "search"))
    rows = []
    for seed, (start, end) in enumerate(WINDOWS.values()):
        days = (end - start).days + 2
        rows += _enrich(
            build_rows(
                acme, projects, seed=20 + seed, traces=220, now=end + timedelta(days=1), days=days
            ),
            seed=seed,
        )
    rows += _edge_rows(acme, projects[0])
    for i in range(0, len(rows), 113):  # folded into the rollups as ingestion does
        write(engine, rows[i : i + 113])
    return {"engine": engine, "acme": acme, "df": all_spans(engine)}


def _run(d, query, force=None):
    return run_metrics(d["engine"], admin_scope(d["acme"]), query, now=NOW, force=force)


@pytest.mark.parametrize("force", ["raw", "rollup"])
@pytest.mark.parametrize("bucket", ["1hour", "1day", "1week"])
@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("zone", ZONES)
def test_buckets_in_a_zone_match_polars(zoned_data, zone, window, bucket, force):
    d = zoned_data
    start, end = WINDOWS[window]
    spec = FilterSpec(relative=None, start=start, end=end)
    query = MetricQuery(series=SERIES, filters=spec, bucket=bucket, zone=zone)
    result = _run(d, query, force)
    assert result.source == force
    ref = reference_metrics(
        d["df"], spec, NOW, d["acme"], result.series, (), result.bucket_seconds, zone=zone
    )
    check(result, ref, ["bucket"])
    # exactly the buckets of the zone's clock over the range, each once
    buckets = result.frame["bucket"]
    assert buckets.is_unique().all() and buckets.is_sorted()
    assert buckets.min() <= start < end <= buckets.max() + timedelta(days=8)


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kathmandu"])
def test_grouped_zone_buckets_match_polars(zoned_data, zone):
    d = zoned_data
    start, end = WINDOWS["autumn"]
    spec = FilterSpec(relative=None, start=start, end=end)
    for force in ("raw", "rollup"):
        query = MetricQuery(
            series=("request_count.count", "total_cost.sum"),
            filters=spec,
            bucket="1day",
            group_by=("model",),
            zone=zone,
        )
        result = _run(d, query, force)
        ref = reference_metrics(
            d["df"], spec, NOW, d["acme"], result.series, ("model",), 86_400, zone=zone
        )
        check(result, ref, ["bucket", "model"])


@pytest.mark.parametrize("force", ["raw", "rollup"])
@pytest.mark.parametrize("zone", ZONES)
def test_trace_metrics_by_local_day_match_polars(zoned_data, zone, force):
    d = zoned_data
    start, end = WINDOWS["spring"]
    spec = FilterSpec(relative=None, start=start, end=end)
    query = MetricQuery(
        series=("trace_count.count", "trace_cost.sum"), filters=spec, bucket="1day", zone=zone
    )
    result = _run(d, query, force)
    ref = reference_trace_metrics(
        d["df"], spec, NOW, d["acme"], result.series, (), 86_400, zone=zone
    )
    check(result, ref, ["bucket"])


def test_new_york_days_last_23_and_25_hours(zoned_data):
    d = zoned_data
    for window, hours in (("spring", 23), ("autumn", 25)):
        start, end = WINDOWS[window]
        spec = FilterSpec(relative=None, start=start, end=end)
        query = MetricQuery(
            series=("request_count.count",), filters=spec, bucket="1day", zone="America/New_York"
        )
        result = _run(d, query)
        starts = result.frame["bucket"].to_list()
        lengths = {
            b: (n - b) / timedelta(hours=1) for b, n in zip(starts, starts[1:], strict=False)
        }
        change = Zone("America/New_York").midnight(
            Zone("America/New_York").local(SPRING if window == "spring" else AUTUMN).date()
        )
        assert lengths[change] == hours
        assert all(v == 24 for b, v in lengths.items() if b != change)
        # the rollups answer from hours (a New York day is whole UTC hours), not from UTC days
        assert "1day" not in result.grains and "1hour" in result.grains


def test_half_hour_zones_read_minutes_not_hours(zoned_data):
    d = zoned_data
    start, end = WINDOWS["spring"]
    spec = FilterSpec(relative=None, start=start, end=end)
    for zone in ("Asia/Kolkata", "Asia/Kathmandu"):
        query = MetricQuery(series=("request_count.count",), filters=spec, bucket="1day", zone=zone)
        result = _run(d, query, "rollup")
        assert result.grains[0] == "1min" or "1hour" not in result.grains
        local = result.frame["bucket"].dt.convert_time_zone(zone)
        assert (local.dt.hour() == 0).all() and (local.dt.minute() == 0).all()


def test_week_buckets_start_on_local_mondays(zoned_data):
    d = zoned_data
    start, end = WINDOWS["autumn"]
    spec = FilterSpec(relative=None, start=start, end=end)
    for zone in ZONES:
        query = MetricQuery(
            series=("request_count.count",), filters=spec, bucket="1week", zone=zone
        )
        local = _run(d, query).frame["bucket"].dt.convert_time_zone(zone)
        assert (local.dt.weekday() == 1).all() and (local.dt.hour() == 0).all()


def test_partial_days_follow_the_zone(zoned_data):
    d = zoned_data
    start, end = WINDOWS["spring"]
    spec = FilterSpec(relative=None, start=start, end=end)
    query = MetricQuery(
        series=("request_count.count",), filters=spec, bucket="1day", zone="Asia/Kolkata"
    )
    result = _run(d, query)
    starts = result.frame["bucket"].to_list()
    assert set(result.partial_buckets) == {starts[0], starts[-1]}
    assert result.partial_buckets[starts[0]] == (starts[1] - start).total_seconds()


def test_a_bad_zone_name_says_what_to_send():
    with pytest.raises(UserError, match="IANA name such as"):
        MetricQuery(series=("request_count.count",), zone="Mars/Olympus")


def test_the_zone_survives_json():
    query = MetricQuery(series=("request_count.count",), bucket="1week", zone="Asia/Kathmandu")
    assert query_from_json(query_to_json(query)) == query
    utc = MetricQuery(series=("request_count.count",))
    assert "zone" not in query_to_json(utc)  # stored UTC queries keep their form


def test_empty_zone_frame_keeps_its_type(zoned_data):
    d = zoned_data
    spec = FilterSpec(
        relative=None, start=datetime(2020, 1, 1, tzinfo=UTC), end=datetime(2020, 1, 9, tzinfo=UTC)
    )
    query = MetricQuery(
        series=("request_count.count",), filters=spec, bucket="1day", zone="Asia/Kolkata"
    )
    frame = _run(d, query).frame
    assert frame["bucket"].dtype == pl.Datetime("us", "UTC")
    assert frame.height == 9 and frame["request_count.count"].sum() == 0
