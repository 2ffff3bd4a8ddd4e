"""Cost attribution by a tag or metadata key, against polars over the raw rows on both stores:
the parts (with "(none)" for spans without the key) add up to the total; viewers see no cost."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.reports.attribution import FIGURES, NONE, cost_attribution
from tests.helpers import admin_scope
from tests.metrics.reference import reference_metrics
from tests.metrics.test_keyed_groups import keyed  # noqa: F401 (the shared fixture)
from tests.traces.conftest import NOW

SERIES = tuple(FIGURES.values())


def _reference(d, spec, key) -> pl.DataFrame:
    ref = reference_metrics(d["df"], spec, NOW, d["acme"], SERIES, (key,), None)
    return ref.with_columns(pl.col(key).fill_null(NONE).alias("value"))


@pytest.mark.parametrize("key", ["tag:customer", "metadata:customer", "model"])
def test_parts_add_up_to_the_total_and_equal_polars(keyed, key):  # noqa: F811
    d = keyed
    spec = FilterSpec(relative="3d")
    got = cost_attribution(d["engine"], admin_scope(d["acme"]), spec, key, now=NOW)
    assert got.figures == ("cost", "requests", "tokens", "errors")
    ref = _reference(d, spec, key)
    by_value = {r["value"]: r for r in got.frame.to_dicts()}
    assert set(by_value) == set(ref["value"].to_list())
    if key != "model":
        assert NONE in by_value  # the spans without the key are a row of their own
    for want in ref.to_dicts():
        have = by_value[want["value"]]
        for figure, series in FIGURES.items():
            assert have[figure] == pytest.approx(want[series] or 0, rel=1e-9, abs=1e-12)
    # the parts add up to the total, which is the ungrouped figure and polars' total
    whole = reference_metrics(d["df"], spec, NOW, d["acme"], SERIES, (), None).to_dicts()[0]
    for figure, series in FIGURES.items():
        assert got.frame[figure].sum() == pytest.approx(got.totals[figure], rel=1e-9)
        assert got.totals[figure] == pytest.approx(whole[series] or 0, rel=1e-9, abs=1e-12)
        assert got.frame[f"{figure}_share"].sum() == pytest.approx(1.0)
    costs = got.frame["cost"].to_list()
    assert costs == sorted(costs, reverse=True)


def test_change_against_the_previous_period(keyed):  # noqa: F811
    d = keyed
    spec = FilterSpec(relative="3d")
    got = cost_attribution(d["engine"], admin_scope(d["acme"]), spec, "tag:customer", now=NOW)
    before = spec.pinned(NOW).replace(
        relative=None, start=NOW - timedelta(days=6), end=NOW - timedelta(days=3)
    )
    ref = _reference(d, before, "tag:customer")
    previous = {r["value"]: r for r in ref.to_dicts()}
    for row in got.frame.to_dicts():
        want = previous.get(row["value"], {}).get("total_cost.sum") or 0
        assert row["cost_previous"] == pytest.approx(want, rel=1e-9, abs=1e-12)
        if want:
            assert row["cost_change_pct"] == pytest.approx((row["cost"] - want) / want * 100)
        else:
            assert row["cost_change_pct"] is None
    assert got.previous_totals["cost"] == pytest.approx(ref["total_cost.sum"].sum())


def test_folded_groups_still_add_up(keyed, monkeypatch):  # noqa: F811
    """Past the group cap the small groups are one "(other)" row: still the whole total."""
    d = keyed
    from observatory_core.base.settings import get_settings

    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_GROUPS", "2")
    get_settings.cache_clear()
    try:
        spec = FilterSpec(relative="3d")
        got = cost_attribution(d["engine"], admin_scope(d["acme"]), spec, "tag:customer", now=NOW)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    # two kept groups (the folding key reads no value and "" alike, so both stay), "(other)"
    assert "(other)" in got.frame["value"].to_list() and got.frame.height <= 4
    whole = run_metrics(
        d["engine"],
        admin_scope(d["acme"]),
        MetricQuery(series=("total_cost.sum",), filters=spec, bucket=None),
        now=NOW,
    ).frame["total_cost.sum"][0]
    assert got.frame["cost"].sum() == pytest.approx(whole, rel=1e-9)


def test_viewers_see_no_costs_and_all_time_is_refused(keyed):  # noqa: F811
    d = keyed
    viewer = admin_scope(d["acme"], role=Role.VIEWER)
    got = cost_attribution(d["engine"], viewer, FilterSpec(relative="3d"), "tag:customer", now=NOW)
    assert got.figures == ("requests", "tokens", "errors")
    assert not [c for c in got.frame.columns if c.startswith("cost")]
    assert "cost" not in got.totals
    with pytest.raises(UserError, match="pick a time range"):
        cost_attribution(d["engine"], viewer, FilterSpec(relative=None), "tag:customer", now=NOW)
    with pytest.raises(UserError, match="Cannot group by"):
        cost_attribution(d["engine"], viewer, FilterSpec(relative="3d"), "customer", now=NOW)
