"""Overview: period comparison and its noise test, on data built to differ and not to."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import partial

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.reports import significance as sig
from observatory_core.reports.overview import (
    budget_burn,
    common_errors,
    period_overview,
    set_budget,
    top,
)
from tests.helpers import admin_scope, all_spans, make_org, span, write
from tests.metrics.reference import reference_trace_metrics
from tests.restore import shared

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _period(org, project, rng, *, start, n, latency, error_share, cost, users):
    rows = []
    for _ in range(n):
        t = start + timedelta(seconds=rng.uniform(0, 86_399))
        failed = rng.random() < error_share
        rows.append(
            span(
                org,
                project,
                t,
                duration_ms=rng.lognormvariate(latency, 0.3),
                status="error" if failed else "ok",
                error_type="RateLimitError" if failed else None,
                error_message="429 Too Many Requests" if failed else None,
                model=rng.choice(["gpt-4o", "claude-haiku-4-5"]),
                provider="openai",
                user_id=f"u{rng.randrange(users)}",
                session_id=f"s{rng.randrange(users * 3)}",
                input_tokens=rng.randrange(100, 300),
                output_tokens=50,
                input_cost_usd=cost * rng.uniform(0.8, 1.2),
            )
        )
    return rows


def _seed(engine, *, same: bool):
    org, (project,) = make_org(engine, "acme")
    rng = random.Random(3)
    before = _period(
        org,
        project,
        rng,
        start=NOW - timedelta(days=2),
        n=600,
        latency=6.0,
        error_share=0.02,
        cost=0.01,
        users=40,
    )
    if same:
        now = _period(
            org,
            project,
            rng,
            start=NOW - timedelta(days=1),
            n=600,
            latency=6.0,
            error_share=0.02,
            cost=0.01,
            users=40,
        )
    else:
        now = _period(
            org,
            project,
            rng,
            start=NOW - timedelta(days=1),
            n=900,
            latency=6.5,
            error_share=0.08,
            cost=0.02,
            users=80,
        )
    write(engine, before + now)
    return org


@pytest.fixture(scope="module")
def _loads() -> dict:
    return {}


@pytest.fixture
def changed(db_url, _loads):
    """(engine, org): the two days built to differ, written once per database for the module."""
    data = shared(_loads, db_url, partial(_seed, same=False), "changed")
    return data.engine, data.loaded


@pytest.fixture
def steady_4_days(db_url, _loads):
    """(engine, org): a span every 6 minutes over 4 days, written once per database."""
    since = NOW - timedelta(days=4)
    data = shared(_loads, db_url, partial(_steady, since=since, every=timedelta(minutes=6)), "4d")
    return data.engine, data.loaded


def _traces(df: pl.DataFrame, org: int, spec: FilterSpec) -> int:
    """Traces begun in the period with a matching span: polars over the rows grouped by trace."""
    ref = reference_trace_metrics(df, spec, NOW, org, ("trace_count.count",), (), None)
    return ref["trace_count.count"].item()


@pytest.mark.parametrize("force", ["raw", "rollup"])
def test_a_real_change_is_marked_and_matches_polars(changed, force):
    engine, org = changed
    view = period_overview(
        engine, admin_scope(org), FilterSpec(relative="24h"), now=NOW, force=force
    )
    k = {x.key: x for x in view.kpis}
    df = all_spans(engine)
    cur = df.filter(pl.col("start_time") >= NOW - timedelta(days=1))
    prev = df.filter(pl.col("start_time") < NOW - timedelta(days=1))
    assert k["requests"].current == cur.height == 900 and k["requests"].previous == prev.height
    assert k["cost"].current == pytest.approx(cur["total_cost_usd"].sum())
    assert k["error_rate"].current == pytest.approx((cur["status"] == "error").mean())
    assert k["users"].current == cur["user_id"].n_unique()
    assert k["sessions"].previous == prev["session_id"].n_unique()
    assert k["avg_latency"].current == pytest.approx(cur["duration_ms"].mean())
    assert k["requests"].change_pct == pytest.approx(50.0)
    assert k["traces"].current == _traces(df, org, FilterSpec(relative="24h"))
    assert k["traces"].previous == _traces(
        df,
        org,
        FilterSpec(relative=None, start=NOW - timedelta(days=2), end=NOW - timedelta(days=1)),
    )
    assert [x.key for x in view.kpis][:3] == ["requests", "traces", "cost"]  # side by side
    for key in ("requests", "cost", "avg_latency", "p95_latency", "error_rate", "users", "tokens"):
        assert k[key].verdict.significant, key


def test_no_change_is_not_marked(engine):
    org = _seed(engine, same=True)
    view = period_overview(engine, admin_scope(org), FilterSpec(relative="24h"), now=NOW)
    marked = [x.key for x in view.kpis if x.verdict.significant]
    assert marked == []


def test_small_samples_are_never_marked():
    assert not sig.counts(5, 20).significant
    assert sig.counts(5, 20).z is None
    assert not sig.proportions(1, 10, 9, 10).significant


def test_top_errors_and_budget(changed):
    engine, org = changed
    scope = admin_scope(org)
    spec = FilterSpec(relative="24h")
    ranked = top(engine, scope, spec, "model", "cost", now=NOW).frame
    df = all_spans(engine).filter(pl.col("start_time") >= NOW - timedelta(days=1))
    want = (
        df.group_by("model")
        .agg(pl.col("total_cost_usd").sum())
        .sort("total_cost_usd", descending=True)
    )
    assert ranked["model"].to_list() == want["model"].to_list()
    errors = common_errors(engine, scope, spec, now=NOW)
    assert errors.to_dicts()[0]["error_type"] == "RateLimitError"
    assert errors["count"][0] == (df["status"] == "error").sum()
    assert errors["sample_message"][0] == "429 Too Many Requests"

    set_budget(engine, scope, 100)
    burn = budget_burn(engine, scope, now=NOW)
    month = all_spans(engine).filter(pl.col("start_time") >= NOW.replace(day=1, hour=0))
    assert burn.budget_usd == 100
    assert burn.spent_usd == pytest.approx(month["total_cost_usd"].sum())
    days = (NOW - NOW.replace(day=1, hour=0)).total_seconds() / 86400
    assert burn.forecast_usd == pytest.approx(burn.spent_usd / days * 30)
    with pytest.raises(UserError, match="positive number"):
        set_budget(engine, scope, -5)
    with pytest.raises(UserError, match="does not include admin"):
        set_budget(engine, admin_scope(org, role=Role.BILLING), 10)


@pytest.mark.parametrize("force", ["raw", "rollup"])
def test_unique_users_and_sessions_honour_the_whole_filter(changed, force):
    """Every KPI counts the filtered spans: unique users and sessions too (they came from the
    actor rollups, which know only time, and ignored every other filter)."""
    engine, org = changed
    df = all_spans(engine)
    cur = df.filter(pl.col("start_time") >= NOW - timedelta(days=1))
    prev = df.filter(pl.col("start_time") < NOW - timedelta(days=1))
    for spec, keep in (
        (FilterSpec(relative="24h", models=("gpt-4o",)), pl.col("model") == "gpt-4o"),
        (FilterSpec(relative="24h", statuses=("error",)), pl.col("status") == "error"),
        (FilterSpec(relative="24h", user_ids=("u1", "u2")), pl.col("user_id").is_in(["u1", "u2"])),
    ):
        if force == "rollup" and spec.user_ids:
            continue  # rollups cannot answer a user filter (forcing them is refused)
        view = period_overview(engine, admin_scope(org), spec, now=NOW, force=force)
        k = {x.key: x for x in view.kpis}
        assert k["users"].current == cur.filter(keep)["user_id"].n_unique(), spec
        assert k["sessions"].current == cur.filter(keep)["session_id"].n_unique(), spec
        assert k["sessions"].previous == prev.filter(keep)["session_id"].n_unique(), spec
        assert k["requests"].current == cur.filter(keep).height
        assert k["traces"].current == _traces(df, org, spec), spec


def _steady(engine, *, since: datetime, every: timedelta, cost: float = 0.01):
    """One span every `every` from `since` to NOW: the same traffic all along."""
    org, (project,) = make_org(engine, "acme")
    rows, t = [], since
    while t < NOW:
        rows.append(span(org, project, t, duration_ms=500.0, input_cost_usd=cost, model="gpt-4o"))
        t += every
    write(engine, rows)
    return org


@pytest.mark.parametrize("force", ["raw", "rollup"])
def test_a_period_not_over_is_compared_so_far_against_the_same_part_before(steady_4_days, force):
    """Steady traffic through a period that ends tomorrow: weighed against a whole previous
    period, the half that has passed read as a fall (-25%, "beyond noise")."""
    engine, org = steady_4_days
    spec = FilterSpec(relative=None, start=NOW - timedelta(hours=36), end=NOW + timedelta(hours=12))
    view = period_overview(engine, admin_scope(org), spec, now=NOW, force=force)
    k = {x.key: x for x in view.kpis}
    assert view.end == NOW  # what was compared: so far
    assert k["requests"].current == k["requests"].previous == 360  # 36 hours each, 10 an hour
    assert k["requests"].change_pct == 0 and not k["requests"].verdict.significant
    assert k["cost"].current == pytest.approx(k["cost"].previous)
    assert view.start == NOW - timedelta(hours=36)


@pytest.mark.parametrize("force", ["raw", "rollup"])
def test_a_period_not_over_compares_traces_with_the_same_part_before_as_requests(
    steady_4_days, force
):
    """The Traces tile of a period not over is weighed against the same stretch as requests
    (start - length to now - length), not the stretch just before the start: a burst 80 hours
    back lies in the first and not the second (found in review: traces read 360 against 360
    where requests read 360 against 410). Each span is a trace of its own; polars counts."""
    engine, org = steady_4_days
    project = all_spans(engine)["project_id"][0]
    burst = [span(org, project, NOW - timedelta(hours=80, minutes=i)) for i in range(50)]
    write(engine, burst)
    spec = FilterSpec(relative=None, start=NOW - timedelta(hours=36), end=NOW + timedelta(hours=12))
    view = period_overview(engine, admin_scope(org), spec, now=NOW, force=force)
    k = {x.key: x for x in view.kpis}
    df = all_spans(engine)
    before = df.filter(
        (pl.col("start_time") >= NOW - timedelta(hours=84))
        & (pl.col("start_time") < NOW - timedelta(hours=48))
    )
    assert k["requests"].previous == before.height == 410
    assert k["traces"].previous == before["trace_id"].n_unique() == 410
    assert k["traces"].current == k["requests"].current == 360


def test_the_budget_forecast_counts_today_for_the_hours_passed(engine):
    """Steady spending of $2.40 a day: the forecast for a 30-day month is $72, not less (today's
    6 hours taken as a whole day would give 19 days' rate from 18.25 days' spending)."""
    org = _steady(engine, since=NOW.replace(day=1, hour=0), every=timedelta(hours=1), cost=0.1)
    now = NOW.replace(hour=6)
    scope = admin_scope(org)
    burn = budget_burn(engine, scope, now=now)
    assert burn.spent_usd == pytest.approx(0.1 * (19 * 24 + 6))
    assert burn.forecast_usd == pytest.approx(0.1 * 24 * 30)
    assert burn.partial_days == {now.replace(hour=0): 6 * 3600.0}
