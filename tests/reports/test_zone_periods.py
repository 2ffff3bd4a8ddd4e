"""Calendar periods, the budget month and its forecast on the reader's clock: a New York
reader's November starts at their midnight, "yesterday" in Kolkata is their yesterday, and the
figures equal polars over the raw rows of exactly those instants (both stores)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.base.zones import Zone, calendar_period, month_start, next_month_start
from observatory_core.filters.spec import FilterSpec
from observatory_core.reports.overview import budget_burn, period_overview, set_budget
from tests.helpers import admin_scope, all_spans, make_org, span, write
from tests.metrics.reference import bucket_column

NOW = datetime(2026, 11, 2, 3, 30, tzinfo=UTC)  # still Nov 1 in New York, Nov 2 in Kolkata


def _seed(engine) -> int:
    org, (project,) = make_org(engine, "acme")
    rng = random.Random(4)
    start = datetime(2026, 10, 29, tzinfo=UTC)
    rows = [
        span(
            org,
            project,
            start + timedelta(seconds=rng.uniform(0, 4.2 * 86_400)),
            input_cost_usd=round(rng.uniform(0.01, 2), 4),
            output_cost_usd=0.0,
            model="gpt-4o",
        )
        for _ in range(900)
    ]
    write(engine, [r for r in rows if r["start_time"] < NOW])
    return org


def test_calendar_periods_of_a_zone():
    ny, kolkata = Zone("America/New_York"), Zone("Asia/Kolkata")
    today = calendar_period("today", ny, NOW)
    assert today == (datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 2, 5, tzinfo=UTC))
    assert (today[1] - today[0]) == timedelta(hours=25)  # the clocks went back
    assert calendar_period("yesterday", kolkata, NOW) == (
        datetime(2026, 10, 31, 18, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 18, 30, tzinfo=UTC),
    )
    assert month_start(ny, NOW) == datetime(2026, 11, 1, 4, tzinfo=UTC)
    assert month_start(ny, NOW - timedelta(hours=24)) == datetime(2026, 10, 1, 4, tzinfo=UTC)
    assert next_month_start(kolkata, NOW) == datetime(2026, 11, 30, 18, 30, tzinfo=UTC)


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"])
def test_budget_month_and_forecast_follow_the_zone(engine, zone):
    org = _seed(engine)
    scope = admin_scope(org)
    set_budget(engine, scope, 500)
    z = Zone(zone)
    burn = budget_burn(engine, scope, now=NOW, zone=z)
    first, last = month_start(z, NOW), next_month_start(z, NOW)
    assert burn.month_start == first and burn.month_end == last
    df = all_spans(engine).filter((pl.col("start_time") >= first) & (pl.col("start_time") < NOW))
    assert burn.spent_usd == pytest.approx(df["total_cost_usd"].sum()) and burn.spent_usd > 0
    elapsed, left = (NOW - first) / timedelta(days=1), (last - NOW) / timedelta(days=1)
    assert burn.forecast_usd == pytest.approx(burn.spent_usd * (1 + left / elapsed))
    want = (
        df.with_columns(bucket_column("start_time", 86_400, zone))
        .group_by("bucket")
        .agg(pl.col("total_cost_usd").sum())
        .sort("bucket")
    )
    got = burn.daily.filter(pl.col("cost") > 0)
    assert got["day"].to_list() == want["bucket"].to_list()
    assert got["cost"].to_list() == pytest.approx(want["total_cost_usd"].to_list())


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kathmandu"])
def test_yesterday_in_the_zone_counts_its_own_spans(engine, zone):
    org = _seed(engine)
    z = Zone(zone)
    start, end = calendar_period("yesterday", z, NOW)
    view = period_overview(
        engine, admin_scope(org), FilterSpec(relative=None, start=start, end=end), now=NOW, zone=z
    )
    df = all_spans(engine)
    current = df.filter((pl.col("start_time") >= start) & (pl.col("start_time") < end))
    before = df.filter(
        (pl.col("start_time") >= start - (end - start)) & (pl.col("start_time") < start)
    )
    kpis = {k.key: k for k in view.kpis}
    assert kpis["requests"].current == current.height > 0
    assert kpis["requests"].previous == before.height
    assert kpis["cost"].current == pytest.approx(current["total_cost_usd"].sum())


def test_home_hours_are_the_zones_hours(engine):
    from observatory_core.reports.summary import home_summary

    org = _seed(engine)
    z = Zone("Asia/Kolkata")
    summary = home_summary(engine, admin_scope(org), now=NOW, zone=z)
    hours = [h for h, _ in summary.per_hour]
    assert all(h.minute == 30 for h in hours)  # Kolkata's hours start at half past UTC's
    df = all_spans(engine).filter(
        (pl.col("start_time") >= NOW - timedelta(hours=24)) & (pl.col("start_time") < NOW)
    )
    want = dict(
        df.with_columns(bucket_column("start_time", 3600, "Asia/Kolkata"))
        .group_by("bucket")
        .len()
        .iter_rows()
    )
    assert {h: n for h, n in summary.per_hour if n} == want
    assert summary.partial_hours == {}  # the window starts and ends on Kolkata hour edges
