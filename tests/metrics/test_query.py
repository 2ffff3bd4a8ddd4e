"""Bad metric queries get a message naming what to change (no database needed)."""

from datetime import UTC, datetime, timedelta

import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.query import Having, MetricError, MetricQuery

NOW = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"series": ("latency.p95",)}, "Unknown metric 'latency'"),
        ({"series": ("request_count.p95",)}, "p95 does not fit request_count"),
        ({"series": ("error_rate.sum",)}, "use avg"),
        ({"series": ("duration_ms.p97",)}, "Unknown aggregation 'p97'"),
        ({"series": ()}, "at least one metric"),
        ({"series": ("request_count",), "bucket": "2h"}, "Unknown bucket size '2h'"),
        (
            {
                "series": ("request_count",),
                "group_by": ("model", "provider", "status", "operation", "environment", "project"),
            },
            "at most 5 dimensions; you chose 6, remove 1",
        ),
        ({"series": ("request_count",), "group_by": ("region",)}, "Cannot group by 'region'"),
        ({"series": ("request_count",), "limit": 0}, "Limit must be"),
        ({"series": ("request_count",), "sort": "nonsense"}, "Cannot sort by"),
    ],
)
def test_bad_queries_are_refused_with_the_fix(kwargs, message):
    with pytest.raises(MetricError, match=message):
        MetricQuery(**kwargs)


def test_bad_having():
    with pytest.raises(MetricError, match="not a number"):
        Having("request_count.count", ">", "ten")
    with pytest.raises(MetricError, match="unknown comparison"):
        Having("request_count.count", "~", 1)


def test_range_too_long_for_the_bucket():
    query = MetricQuery(series=("request_count",), bucket="1min", filters=FilterSpec(relative="7d"))
    start, end = query.filters.window(NOW)
    with pytest.raises(
        MetricError, match="1min bucket charts at most 1 day; the range is 7.0 days"
    ):
        query.bucket_seconds(start, end)


def test_auto_bucket_follows_the_range():
    for relative, seconds in (
        ("1h", 60),
        ("24h", 300),
        ("7d", 3600),
        ("30d", 3600),
        ("90d", 86400),
    ):
        query = MetricQuery(series=("request_count",), filters=FilterSpec(relative=relative))
        assert query.bucket_seconds(*query.filters.window(NOW)) == seconds, relative


def test_reversed_range_is_refused_by_the_filter():
    from observatory_core.base.errors import UserError

    with pytest.raises(UserError, match="swap them"):
        FilterSpec(relative=None, start=NOW, end=NOW - timedelta(days=1))


def test_json_round_trip():
    from observatory_core.metrics.query import query_from_json, query_to_json

    query = MetricQuery(
        series=("duration_ms.p95", "total_cost.sum"),
        filters=FilterSpec(relative="7d", models=("gpt-4o",)),
        bucket="1hour",
        group_by=("model", "project"),
        having=(Having("request_count.count", ">", 10),),
        sort="total_cost.sum",
        limit=5,
    )
    assert query_from_json(query_to_json(query)) == query
