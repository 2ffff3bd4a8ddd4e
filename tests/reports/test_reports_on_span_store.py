"""The reports on the ClickHouse span store (docs/span-store-internals.md, "Reports and alerts"):
Overview, Home, what changed, cost attribution and the budget read spans and rollups from the span
store's engine, the budget from DATABASE_URL's, against polars on the raw rows. The data set is the
metrics tests' chDB copy, made once per session (tests/metrics/conftest.py).
"""

# ruff: noqa: F811
# (the shared data set's fixtures are imported by name)

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import delete

from observatory_core.filters.spec import FilterSpec
from observatory_core.reports.attribution import cost_attribution
from observatory_core.reports.overview import (
    budget_burn,
    common_errors,
    period_overview,
    set_budget,
)
from observatory_core.reports.summary import home_summary
from observatory_core.reports.whatchanged import Periods, what_changed
from observatory_core.storage.schema import org_budgets
from tests.helpers import admin_scope
from tests.metrics.conftest import metrics_data, metrics_store, pytest_generate_tests  # noqa: F401
from tests.metrics.reference import reference_metrics, reference_trace_metrics
from tests.reference import reference_ids

SERIES = (
    "request_count.count",
    "error_count.count",
    "total_cost.sum",
    "total_tokens.sum",
    "duration_ms.avg",
    "duration_ms.p95",
)


def _window(data, days_back: float, days: float) -> FilterSpec:
    end = data["now"] - timedelta(days=days_back)
    return FilterSpec(relative=None, start=end - timedelta(days=days), end=end)


def _reference(data, spec: FilterSpec) -> dict:
    return reference_metrics(data["df"], spec, data["now"], data["acme"], SERIES, (), None).row(
        0, named=True
    )


def _traces(data, spec: FilterSpec) -> int:
    """Traces begun in the window (their first start), from the raw rows."""
    series = ("trace_count.count",)
    frame = reference_trace_metrics(data["df"], spec, data["now"], data["acme"], series, (), None)
    return int(frame["trace_count.count"].sum())


def _actors(data, spec: FilterSpec) -> tuple[int, int]:
    ids = reference_ids(data["df"], spec, data["now"], data["acme"])
    rows = data["df"].filter(pl.col("id").is_in(list(ids)) & pl.col("duplicate_of").is_null())
    return rows["user_id"].drop_nulls().n_unique(), rows["session_id"].drop_nulls().n_unique()


@pytest.mark.parametrize("force", ["raw", None])
def test_overview_kpis_match_polars(metrics_data, force):
    """Every KPI of both periods from the span store (raw spans, or its rollups with raw
    edges), distinct users and sessions counted on its spans (no actor rollups there), and the
    traces begun in each period from the store's trace totals."""
    data = metrics_data
    spec = _window(data, 0.3, 2.5)  # ragged edges: rollups and raw spans both read
    view = period_overview(
        data["engine"], admin_scope(data["acme"]), spec, now=data["now"], force=force
    )
    kpis = {k.key: k for k in view.kpis}
    before = spec.replace(start=spec.start - (spec.end - spec.start), end=spec.start)
    for period, side in ((spec, "current"), (before, "previous")):
        want = _reference(data, period)
        assert want["request_count.count"] > 20  # the periods hold enough to compare
        got = {key: getattr(kpis[key], side) for key in kpis}
        assert got["requests"] == want["request_count.count"]
        assert got["cost"] == pytest.approx(want["total_cost.sum"], rel=1e-9)
        assert got["tokens"] == want["total_tokens.sum"]
        assert got["avg_latency"] == pytest.approx(want["duration_ms.avg"], rel=1e-9)
        errors = want["error_count.count"] / want["request_count.count"]
        assert got["error_rate"] == pytest.approx(errors, rel=1e-9)
        assert (got["users"], got["sessions"]) == _actors(data, period)
        if force == "raw":  # exact; from the rollups a t-digest within its stated bound
            assert got["p95_latency"] == pytest.approx(want["duration_ms.p95"], rel=1e-9)
        assert got["traces"] == _traces(data, period) > 5


def test_home_matches_polars(metrics_data):
    data = metrics_data
    summary = home_summary(data["engine"], admin_scope(data["acme"]), now=data["now"])
    want = _reference(data, _window(data, 0, 1))
    assert summary.current.requests == want["request_count.count"]
    assert summary.current.errors == want["error_count.count"]
    assert summary.current.cost_usd == pytest.approx(want["total_cost.sum"], rel=1e-9)
    assert summary.current.p95_ms == pytest.approx(want["duration_ms.p95"], rel=1e-9)
    assert sum(n for _, n in summary.per_hour) == want["request_count.count"]
    assert summary.current.traces == _traces(data, _window(data, 0, 1)) > 0


@pytest.mark.parametrize("series", ["total_cost.sum", "error_rate.avg", "duration_ms.avg"])
@pytest.mark.parametrize("force", ["raw", None])
def test_what_changed_parts_add_up_to_the_change(metrics_data, series, force):
    """A sum split by difference, a ratio and an average by shift-share: the parts add up to
    the change, and both periods' totals are polars'."""
    data = metrics_data
    now = data["now"]
    periods = Periods(
        now - timedelta(days=5), now - timedelta(days=2.5), now - timedelta(days=2.5), now
    )
    change = what_changed(
        data["engine"],
        admin_scope(data["acme"]),
        series,
        "model",
        FilterSpec(),
        periods,
        top=50,
        now=now,
        force=force,
    )
    assert sum(c.change for c in change.contributions) == pytest.approx(change.change, abs=1e-9)
    for start, end, got in (
        (periods.before_start, periods.before_end, change.before),
        (periods.after_start, periods.after_end, change.after),
    ):
        spec = FilterSpec(relative=None, start=start, end=end)
        want = reference_metrics(data["df"], spec, now, data["acme"], (series,), (), None)
        assert got == pytest.approx(want[series].item(), rel=1e-9)


def test_cost_attribution_parts_add_up_to_polars(metrics_data):
    data = metrics_data
    spec = _window(data, 0, 3)
    got = cost_attribution(
        data["engine"], admin_scope(data["acme"]), spec, "model", now=data["now"]
    )
    want = reference_metrics(
        data["df"], spec, data["now"], data["acme"], ("total_cost.sum",), ("model",), None
    )
    expected = {m or "(none)": v for m, v in want.select("model", "total_cost.sum").iter_rows()}
    found = dict(got.frame.select("value", "cost").iter_rows())
    assert found.keys() == expected.keys()
    for model, cost in expected.items():
        assert found[model] == pytest.approx(cost, rel=1e-9)
    assert got.totals["cost"] == pytest.approx(sum(expected.values()), rel=1e-9)


def test_errors_and_the_budget_read_spans_there_and_the_budget_here(metrics_data):
    """Common errors from the span store; the budget burn's costs from the span store and the
    budget itself from DATABASE_URL (the two engines of `budget_burn`)."""
    data = metrics_data
    scope, now = admin_scope(data["acme"]), data["now"]
    spec = _window(data, 0, 6)
    errors = common_errors(data["engine"], scope, spec, now=now)
    ids = reference_ids(data["df"], spec, now, data["acme"])
    failed = data["df"].filter(
        pl.col("id").is_in(list(ids))
        & (pl.col("status") == "error")
        & pl.col("duplicate_of").is_null()
    )
    kinds = failed.group_by(pl.col("error_type").fill_null("(no error type)")).len()
    expected = dict(kinds.iter_rows())
    assert dict(errors.select("error_type", "count").iter_rows()) == {
        kind: expected[kind] for kind in errors["error_type"]
    }
    assert errors["count"].to_list() == sorted(expected.values(), reverse=True)[:10]
    set_budget(data["database"], scope, 100.0)
    try:
        burn = budget_burn(data["database"], scope, now=now, spans=data["engine"])
    finally:
        with data["database"].begin() as conn:
            conn.execute(delete(org_budgets).where(org_budgets.c.org_id == data["acme"]))
    month = FilterSpec(relative=None, start=burn.month_start, end=now)
    want = reference_metrics(data["df"], month, now, data["acme"], ("total_cost.sum",), (), None)
    assert burn.budget_usd == 100.0
    assert want["total_cost.sum"].item() > 0
    assert burn.spent_usd == pytest.approx(want["total_cost.sum"].item(), rel=1e-9)
