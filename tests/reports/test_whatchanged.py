"""What changed: each value's part of a change, against polars on the raw rows, on both stores."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.base.errors import PermissionDenied
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.folding import OTHER
from observatory_core.reports.whatchanged import (
    SHIFT_SHARE,
    ChangeError,
    Periods,
    what_changed,
)
from tests.helpers import admin_scope, all_spans, make_org, span, write
from tests.metrics.reference import reference_metrics
from tests.restore import shared

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
DAY = timedelta(days=1)
PERIODS = Periods(NOW - 2 * DAY, NOW - DAY, NOW - DAY, NOW)
SPEC = FilterSpec(relative="24h")
# model -> (calls before, calls after, error share before/after, latency before/after, cost)
MODELS = {
    "gpt-4o": (120, 200, 0.02, 0.15, 400, 900, 0.010),
    "claude-haiku-4-5": (150, 90, 0.05, 0.05, 300, 320, 0.002),
    "old-model": (60, 0, 0.20, 0.0, 700, 0, 0.005),  # gone in the second period
    "gemini-new": (0, 80, 0.0, 0.30, 0, 1500, 0.020),  # new in the second period
    None: (20, 25, 0.5, 0.6, 50, 60, 0.0),  # calls that failed before naming a model
}


def _seed(engine) -> int:
    org, (project,) = make_org(engine, "acme")
    rng = random.Random(7)
    rows = []
    for model, (n0, n1, e0, e1, l0, l1, cost) in MODELS.items():
        for day, n, share, latency in ((2, n0, e0, l0), (1, n1, e1, l1)):
            for _ in range(n):
                t = NOW - day * DAY + timedelta(seconds=rng.uniform(1, 86_000))
                failed = rng.random() < share
                rows.append(
                    span(
                        org,
                        project,
                        t,
                        model=model,
                        status="error" if failed else "ok",
                        duration_ms=latency * rng.uniform(0.5, 1.5),
                        input_tokens=rng.randrange(50, 500),
                        output_tokens=40,
                        input_cost_usd=cost * rng.uniform(0.5, 1.5),
                        user_id=f"u{rng.randrange(30)}",
                    )
                )
    # spans that are not LLM calls count in none of these figures
    rows += [
        span(org, project, NOW - DAY / 2, operation="execute_tool", model="gpt-4o", status="error")
        for _ in range(15)
    ]
    write(engine, rows)
    # another org's spans never show
    other, (p2,) = make_org(engine, "other")
    write(engine, [span(other, p2, NOW - DAY / 3, model="gpt-4o", input_cost_usd=5.0)] * 1)
    return org


@pytest.fixture(scope="module")
def _loads() -> dict:
    return {}


@pytest.fixture
def seeded(db_url, _loads):
    """(engine, org): the two periods of `_seed`, written once per database for the module
    (the tests only read them)."""
    data = shared(_loads, db_url, _seed)
    return data.engine, data.loaded


def _reference(df, org, series, weight, start, end) -> pl.DataFrame:
    spec = FilterSpec(relative=None, start=start, end=end)
    wanted = (series, weight) if weight else (series,)
    return reference_metrics(df, spec, NOW, org, wanted, ("model",), None)


def _expected(df, org, series: str, weight: str | None) -> dict:
    """Each model's part, computed here from polars' per-model figures."""
    after = _reference(df, org, series, weight, NOW - DAY, NOW)
    before = _reference(df, org, series, weight, NOW - 2 * DAY, NOW - DAY)
    both = after.join(before, on="model", how="full", coalesce=True, suffix="_0", nulls_equal=True)
    out = {}
    if weight is None:
        for r in both.to_dicts():
            out[r["model"]] = (r[series] or 0) - (r[f"{series}_0"] or 0)
        return out
    w1, w0 = both[weight].fill_null(0).sum(), both[f"{weight}_0"].fill_null(0).sum()
    for r in both.to_dicts():
        s1, s0 = (r[weight] or 0) / w1, (r[f"{weight}_0"] or 0) / w0
        r1 = r[series] if s1 else None
        r0 = r[f"{series}_0"] if s0 else None
        r1, r0 = (r1 if r1 is not None else r0), (r0 if r0 is not None else r1)
        out[r["model"]] = (
            (s1 - s0) * (r0 + r1) / 2,  # mix
            (r1 - r0) * (s0 + s1) / 2,  # rate
        )
    return out


CASES = [
    ("total_cost.sum", None),  # a sum
    ("request_count.count", None),
    ("error_rate.avg", "request_count.count"),  # a ratio
    ("duration_ms.avg", "duration_ms.count"),  # an average
]


@pytest.mark.parametrize("force", [None, "raw"])
@pytest.mark.parametrize(("series", "weight"), CASES)
def test_parts_add_up_and_match_polars(seeded, series, weight, force):
    engine, org = seeded
    change = what_changed(
        engine, admin_scope(org), series, "model", SPEC, PERIODS, top=100, now=NOW, force=force
    )
    df = all_spans(engine)
    whole_after = reference_metrics(df, SPEC, NOW, org, (series,), (), None)[series].item()
    spec0 = FilterSpec(relative=None, start=NOW - 2 * DAY, end=NOW - DAY)
    whole_before = reference_metrics(df, spec0, NOW, org, (series,), (), None)[series].item()
    assert change.after == pytest.approx(whole_after, rel=1e-9)
    assert change.before == pytest.approx(whole_before, rel=1e-9)
    # the parts add up to the whole change, exactly (to float rounding)
    assert sum(c.change for c in change.contributions) == pytest.approx(
        whole_after - whole_before, rel=1e-9, abs=1e-12
    )
    expected = _expected(df, org, series, weight)
    got = {c.value: c for c in change.contributions}
    assert set(got) == set(expected) == set(MODELS)
    for model, want in expected.items():
        c = got[model]
        if weight is None:
            assert c.change == pytest.approx(want, rel=1e-9, abs=1e-12), model
        else:
            assert change.method == SHIFT_SHARE
            assert c.mix == pytest.approx(want[0], rel=1e-9, abs=1e-12), model
            assert c.rate == pytest.approx(want[1], rel=1e-9, abs=1e-12), model
            assert c.change == pytest.approx(c.mix + c.rate, rel=1e-12, abs=1e-15)


def test_a_value_new_in_the_second_period_counts_fully(seeded):
    engine, org = seeded
    scope = admin_scope(org)
    cost = what_changed(engine, scope, "total_cost.sum", "model", SPEC, PERIODS, now=NOW)
    new = next(c for c in cost.contributions if c.value == "gemini-new")
    df = all_spans(engine)
    cur = df.filter(
        (pl.col("org_id") == org)
        & (pl.col("model") == "gemini-new")
        & (pl.col("start_time") >= NOW - DAY)
    )
    assert new.before is None and new.change == pytest.approx(cur["total_cost_usd"].sum())
    rate = what_changed(engine, scope, "error_rate", "model", SPEC, PERIODS, now=NOW)
    new = next(c for c in rate.contributions if c.value == "gemini-new")
    gone = next(c for c in rate.contributions if c.value == "old-model")
    assert new.rate == 0 and new.mix == pytest.approx(new.after * new.weight_after)
    assert gone.rate == 0 and gone.mix == pytest.approx(-gone.before * gone.weight_before)
    assert new.weight_before == 0 and gone.weight_after == 0


def test_the_rest_folds_into_other_and_the_sum_is_kept(seeded):
    engine, org = seeded
    full = what_changed(
        engine, admin_scope(org), "error_rate.avg", "model", SPEC, PERIODS, now=NOW, top=100
    )
    short = what_changed(
        engine, admin_scope(org), "error_rate.avg", "model", SPEC, PERIODS, now=NOW, top=2
    )
    assert len(short.contributions) == 3 and short.contributions[-1].value == OTHER
    assert short.contributions[-1].groups == len(MODELS) - 2
    assert sum(c.change for c in short.contributions) == pytest.approx(
        sum(c.change for c in full.contributions)
    )
    biggest = sorted(full.contributions, key=lambda c: -abs(c.change))[:2]
    assert [c.value for c in short.contributions[:2]] == [c.value for c in biggest]


def test_a_big_change_is_marked_and_the_default_periods_are_the_previous(seeded):
    engine, org = seeded
    change = what_changed(engine, admin_scope(org), "error_rate.avg", "model", SPEC, now=NOW)
    assert change.periods == PERIODS
    marked = {c.value for c in change.contributions if c.verdict.significant}
    assert "gpt-4o" in marked  # 2% -> 15% over 120 and 200 calls
    assert "claude-haiku-4-5" not in marked  # 5% both times


@pytest.mark.parametrize(
    ("series", "says"),
    [
        ("duration_ms.p95", "percentile"),
        ("unique_users", "distinct"),
        ("duration_ms.max", "max"),
        ("nope", "Unknown metric"),
    ],
)
def test_what_cannot_be_split_is_refused_with_a_reason(sqlite_engine, series, says):
    org, _ = make_org(sqlite_engine, "acme")
    with pytest.raises(ChangeError, match=says):
        what_changed(sqlite_engine, admin_scope(org), series, "model", SPEC, now=NOW)


def test_bad_dimension_and_periods_are_refused(sqlite_engine):
    org, _ = make_org(sqlite_engine, "acme")
    scope = admin_scope(org)
    with pytest.raises(ChangeError, match="choose from"):
        what_changed(sqlite_engine, scope, "request_count", "colour", SPEC, now=NOW)
    backwards = Periods(NOW, NOW - DAY, NOW - DAY, NOW)
    with pytest.raises(ChangeError, match="start must come before"):
        what_changed(sqlite_engine, scope, "request_count", "model", SPEC, backwards, now=NOW)


def test_viewers_get_no_costs(seeded):
    engine, org = seeded
    viewer = admin_scope(org, Role.VIEWER)
    for series in ("total_cost.sum", "total_cost.avg", "trace_cost.avg"):
        with pytest.raises(PermissionDenied, match="cost"):
            what_changed(engine, viewer, series, "model", SPEC, PERIODS, now=NOW)
    change = what_changed(engine, viewer, "error_rate", "model", SPEC, PERIODS, now=NOW)
    assert change.after is not None


@pytest.mark.parametrize("role", [Role.ADMIN, Role.VIEWER])
def test_headline_changes_agree_with_the_overview_tiles(seeded, role):
    from observatory_core.reports.overview import period_overview
    from observatory_core.reports.whatchanged import HEADLINES, headline_changes

    engine, org = seeded
    scope = admin_scope(org, role)
    view = period_overview(engine, scope, SPEC, now=NOW)
    changes = headline_changes(engine, scope, SPEC, view.start, view.end, now=NOW)
    tiles = {k.key: k for k in view.kpis}
    expected = [k for k in HEADLINES if role == Role.ADMIN or k != "cost"]
    assert list(changes) == expected
    for key, change in changes.items():
        assert change.after == pytest.approx(tiles[key].current, rel=1e-9), key
        assert change.before == pytest.approx(tiles[key].previous, rel=1e-9), key
        assert len(change.contributions) <= 4  # the top 3 and "(other)"
        assert sum(c.change for c in change.contributions) == pytest.approx(
            change.after - change.before, rel=1e-9, abs=1e-12
        )
