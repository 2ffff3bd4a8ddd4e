"""A bucket that is not over says so: exactly the buckets the range or the clock cuts are
marked partial, with the seconds they cover; their values are those of the covered part."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.partial import mark, partial_buckets
from observatory_core.metrics.query import MetricQuery
from tests.helpers import admin_scope
from tests.metrics.reference import reference_metrics
from tests.metrics.test_engine import check

H = timedelta(hours=1)


def _run(d, spec, bucket="1hour", now=None, force=None, group_by=()):
    query = MetricQuery(
        series=("request_count.count", "total_cost.sum", "duration_ms.avg"),
        filters=spec,
        bucket=bucket,
        group_by=group_by,
    )
    now = now or d["now"]
    return run_metrics(d["engine"], admin_scope(d["acme"]), query, now=now, force=force), now


@pytest.mark.parametrize("force", ["raw", "rollup"])
def test_a_range_cut_at_both_ends_marks_its_first_and_last_bucket(metrics_data, force):
    d = metrics_data
    start = d["now"] - timedelta(days=1, hours=3, minutes=40)  # 08:20 the day before
    end = d["now"] - timedelta(hours=1, minutes=15)  # 10:45
    result, now = _run(d, FilterSpec(relative=None, start=start, end=end), force=force)
    first, last = result.frame["bucket"][0], result.frame["bucket"][-1]
    assert first == start.replace(minute=0) and last == end.replace(minute=0)
    assert result.partial_buckets == {first: 40 * 60.0, last: 45 * 60.0}
    marked = mark(result.frame, result.partial_buckets)
    assert marked.filter("partial")["bucket"].to_list() == [first, last]
    assert marked.filter(~marked["partial"])["covered_seconds"].null_count() == marked.height - 2
    # the partial buckets hold the spans of their covered part, no more
    ref = reference_metrics(
        d["df"], result_spec(start, end), now, d["acme"], result.series, (), 3600
    )
    check(result, ref, ["bucket"])


def result_spec(start, end) -> FilterSpec:
    return FilterSpec(relative=None, start=start, end=end)


def test_a_relative_range_marks_the_hour_still_running_and_the_first_cut_one(metrics_data):
    d = metrics_data
    now = d["now"] + timedelta(minutes=7)  # 12:07
    result, _ = _run(d, FilterSpec(relative="24h"), now=now)
    assert result.frame.height == 25
    assert result.partial_buckets == {
        d["now"] - timedelta(days=1): 53 * 60.0,  # 12:07 to 13:00 the day before
        d["now"]: 7 * 60.0,  # 12:00 to now
    }


def test_whole_buckets_are_not_marked(metrics_data):
    d = metrics_data
    result, _ = _run(d, FilterSpec(relative="24h"))  # now is on the hour
    assert result.frame.height == 24 and result.partial_buckets == {}
    days, _ = _run(
        d, result_spec(d["now"] - timedelta(days=3, hours=12), d["now"] - 12 * H), "1day"
    )
    assert days.partial_buckets == {} and days.frame.height == 3


def test_buckets_after_now_cover_what_has_passed(metrics_data):
    d = metrics_data
    now = d["now"] + timedelta(minutes=30)
    spec = result_spec(d["now"] - 3 * H, d["now"] + 3 * H)
    result, _ = _run(d, spec, now=now, group_by=("provider",))
    assert result.partial_buckets == {d["now"]: 1800.0, d["now"] + H: 0.0, d["now"] + 2 * H: 0.0}
    assert result.frame.height == 6 * result.frame["provider"].n_unique()


def test_all_time_does_not_mark_the_first_bucket_it_starts_at_the_first_span(metrics_data):
    d = metrics_data
    now = d["now"] + timedelta(minutes=20)
    result, _ = _run(d, FilterSpec(relative=None), bucket="1day", now=now)
    assert result.frame["bucket"][0] not in result.partial_buckets
    assert result.partial_buckets == {d["now"].replace(hour=0): 12 * 3600.0 + 20 * 60}


def test_totals_have_no_buckets_to_mark(metrics_data):
    d = metrics_data
    result, _ = _run(d, result_spec(d["now"] - 90 * timedelta(minutes=1), d["now"]), bucket=None)
    assert result.partial_buckets == {}


def test_partial_buckets_arithmetic():
    t = datetime(2026, 3, 1, 10, 20, 30, 500_000, tzinfo=UTC)
    # one bucket cut at both ends: it covers just the range
    assert partial_buckets(t, t + timedelta(minutes=10), t + 5 * H, 3600) == {
        t.replace(minute=0, second=0, microsecond=0): 600.0
    }
    # five-minute buckets: 10:20:30.5 cuts the 10:20 bucket, 10:31 the 10:30 one
    got = partial_buckets(t, t.replace(minute=31, second=0, microsecond=0), t + H, 300)
    assert got == {
        t.replace(second=0, microsecond=0): 269.5,
        t.replace(minute=30, second=0, microsecond=0): 60.0,
    }
