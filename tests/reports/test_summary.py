"""Home page numbers equal polars over the raw rows, on both databases."""

from datetime import UTC, timedelta
from functools import partial

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.reports.summary import home_summary, percent_change
from tests.helpers import END, admin_scope, all_spans, load_small_demo
from tests.reference import reference_llm_calls
from tests.restore import shared


@pytest.fixture(scope="module")
def _loads() -> dict:
    return {}


@pytest.fixture
def loaded(db_url, _loads):
    """4,000 demo spans, loaded once per database for the module: the tests only read."""
    return shared(_loads, db_url, partial(load_small_demo, spans_count=4000, days=3)).engine


def _reference(df: pl.DataFrame, org_id: int, start, end) -> dict:
    """Requests, their errors, cost and latency over LLM calls; traces over every span."""
    every = df.filter(
        (pl.col("org_id") == org_id)
        & (pl.col("start_time") >= start)
        & (pl.col("start_time") < end)
    )
    w = every.filter(pl.col("id").is_in(list(reference_llm_calls(df))))
    # a trace is counted in the period its first span started in (docs/metrics.md)
    firsts = (
        df.filter(pl.col("org_id") == org_id).group_by("trace_id").agg(pl.col("start_time").min())
    )
    traces = firsts.filter((pl.col("start_time") >= start) & (pl.col("start_time") < end)).height
    return {
        "requests": w.height,
        "traces": traces,
        "errors": w.filter(pl.col("status") == "error").height,
        "cost": w["total_cost_usd"].sum(),
        "p95": w["duration_ms"].quantile(0.95, "linear"),
        "hours": w.group_by(pl.col("start_time").dt.truncate("1h")).len(),
    }


def test_home_summary_matches_polars(loaded):
    df = all_spans(loaded)
    org = int(df["org_id"].min())
    summary = home_summary(loaded, admin_scope(org), now=END)
    for stats, (start, end) in (
        (summary.current, (END - timedelta(hours=24), END)),
        (summary.previous, (END - timedelta(hours=48), END - timedelta(hours=24))),
    ):
        ref = _reference(df, org, start, end)
        assert ref["requests"] > 100
        assert stats.requests == ref["requests"]
        assert stats.traces == ref["traces"]
        assert stats.errors == ref["errors"]
        assert stats.cost_usd == pytest.approx(ref["cost"], rel=1e-9)
        assert stats.p95_ms == pytest.approx(ref["p95"], rel=1e-9)
    hours = dict(_reference(df, org, END - timedelta(hours=24), END)["hours"].iter_rows())
    assert len(summary.per_hour) == 24  # complete: every hour present
    for hour, count in summary.per_hour:
        assert count == hours.get(hour.replace(tzinfo=None), hours.get(hour, 0))


def test_viewer_sees_no_cost_but_the_same_counts(loaded):
    org = int(all_spans(loaded)["org_id"].min())
    admin = home_summary(loaded, admin_scope(org), now=END)
    viewer = home_summary(loaded, admin_scope(org, Role.VIEWER), now=END)
    assert viewer.current.cost_usd is None
    assert viewer.current.requests == admin.current.requests


def test_empty_window_gives_zeros_not_errors(loaded):
    org = int(all_spans(loaded)["org_id"].min())
    summary = home_summary(loaded, admin_scope(org), now=END - timedelta(days=30))
    assert (summary.current.requests, summary.current.cost_usd, summary.current.p95_ms) == (
        0,
        0.0,
        None,
    )
    assert summary.current.error_rate is None
    assert all(n == 0 for _, n in summary.per_hour)


def test_percent_change():
    assert percent_change(150, 100) == 50
    assert percent_change(5, 0) is None
    assert percent_change(None, 3) is None
    assert END.tzinfo is UTC
