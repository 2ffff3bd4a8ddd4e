"""Every metric and aggregation, raw and from rollups, against polars over the raw rows: on
SQLite, PostgreSQL and the ClickHouse span store (chDB; tests/metrics/conftest.py)."""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from observatory_core.accounts.permissions import Role
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import (
    METRICS,
    PERCENTILES,
    ZERO_WHEN_EMPTY,
    Agg,
    Subject,
)
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.estimate import known_groups, spans_in_range
from observatory_core.metrics.folding import OTHER
from observatory_core.metrics.query import MetricQuery
from observatory_core.storage import latency_bins as sketch
from tests.helpers import admin_scope
from tests.metrics.reference import reference_metrics
from tests.reference import reference_llm_calls

# Span metrics: a query charts one subject; trace metrics are checked in test_traces.py.
ALL_SERIES = [
    f"{m.name}.{a.value}"
    for m in METRICS.values()
    if m.subject is not Subject.TRACES
    for a in m.aggregations
]
ROLLUP_SERIES = [
    s
    for s in ALL_SERIES
    if METRICS[s.split(".")[0]].rollup
    and (Agg(s.split(".")[1]) not in PERCENTILES or s.startswith("duration_ms."))
]
GROUPS = ["provider", "model", "environment", "operation", "status", "project"]


def _close(got, want, rel: float) -> bool:
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return got is None or (isinstance(got, float) and math.isnan(got))
    if got is None:
        return False
    return abs(got - want) <= rel * abs(want) + 1e-9


def _tolerance(name: str, source: str) -> tuple[float, float]:
    """(relative, absolute) allowed difference: float noise, or the sketch's stated bound (the
    same latency bins on every store, the span store's too)."""
    if source == "rollup" and Agg(name.split(".")[1]) in PERCENTILES:
        # the bound the pages promise: ±1% (the sketch's own is just under it)
        assert sketch.RELATIVE_BOUND <= 0.01
        return 0.01 + 1e-9, sketch.ABSOLUTE_FLOOR_MS / 2
    return 1e-6, 1e-9


def check(result, reference: pl.DataFrame, keys: list[str]) -> None:
    got = result.frame
    if not keys:
        got_row, want_row = got.to_dicts()[0], reference.to_dicts()[0]
        pairs = [(got_row, want_row)]
    else:
        merged = got.join(reference, on=keys, how="left", suffix="__ref", nulls_equal=True)
        seen = reference.select(keys).unique().height
        matched = merged.filter(pl.col(f"{result.series[0]}__ref").is_not_null() | True)
        assert merged.height >= seen, "a bucket or group of the reference is missing"
        pairs = []
        for row in matched.to_dicts():
            want = {s: row.get(f"{s}__ref") for s in result.series}
            pairs.append((row, want))
        # groups with data in the reference all appear in the result
        assert reference.join(got, on=keys, how="anti", nulls_equal=True).height == 0
    for got_row, want_row in pairs:
        for s in result.series:
            g, w = got_row[s], want_row[s]
            if w is None and Agg(s.split(".")[1]) in ZERO_WHEN_EMPTY:
                w = 0  # an empty bucket counts zero
            rel, floor = _tolerance(s, result.source)
            ok = _close(g, w, rel) or (w is not None and g is not None and abs(g - w) <= floor)
            assert ok, (
                f"{s} at { ({k: got_row[k] for k in keys}) }: got {g}, expected {w} ({result.source})"
            )


filters = st.builds(
    FilterSpec,
    relative=st.sampled_from(["24h", "3d", "7d"]),
    models=st.sampled_from([(), ("gpt-4o",), ("gpt-4o", "o'reilly-model")]),
    environments=st.sampled_from([(), ("production",)]),
    statuses=st.sampled_from([(), ("error",), ("ok", "unset")]),
)
raw_only_filters = st.builds(
    FilterSpec,
    relative=st.sampled_from(["24h", "7d"]),
    user_ids=st.sampled_from([(), ("user-1", "user-2")]),
    min_duration_ms=st.sampled_from([None, 300.0]),
    tags_any=st.sampled_from([(), ("rag",)]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    series=st.lists(st.sampled_from(ROLLUP_SERIES), min_size=1, max_size=4, unique=True),
    group_by=st.lists(st.sampled_from(GROUPS), max_size=2, unique=True),
    bucket=st.sampled_from([None, "1hour", "1day", "5min"]),
    spec=filters,
    force=st.sampled_from(["raw", "rollup"]),
)
def test_rollup_able_queries_match_polars(metrics_data, series, group_by, bucket, spec, force):
    d = metrics_data
    assume(not (bucket == "5min" and spec.relative == "7d"))  # too many points: refused
    query = MetricQuery(series=tuple(series), filters=spec, bucket=bucket, group_by=tuple(group_by))
    result = run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"], force=force)
    assert result.source == force
    ref = reference_metrics(
        d["df"], spec, d["now"], d["acme"], result.series, result.group_by, result.bucket_seconds
    )
    keys = (["bucket"] if result.bucket_seconds else []) + list(group_by)
    check(result, ref, keys)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    series=st.lists(st.sampled_from(ALL_SERIES), min_size=1, max_size=4, unique=True),
    group_by=st.lists(st.sampled_from([*GROUPS, "user_id"]), max_size=2, unique=True),
    bucket=st.sampled_from([None, "1hour"]),
    spec=raw_only_filters,
)
def test_every_metric_raw_matches_polars(metrics_data, series, group_by, bucket, spec):
    d = metrics_data
    query = MetricQuery(series=tuple(series), filters=spec, bucket=bucket, group_by=tuple(group_by))
    result = run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"])
    ref = reference_metrics(
        d["df"], spec, d["now"], d["acme"], result.series, result.group_by, result.bucket_seconds
    )
    keys = (["bucket"] if result.bucket_seconds else []) + list(group_by)
    check(result, ref, keys)


def test_planner_uses_rollups_when_it_can_and_says_so(metrics_data):
    d = metrics_data
    scope = admin_scope(d["acme"])
    fast = MetricQuery(
        series=("duration_ms.p95", "request_count"), bucket="1hour", group_by=("model",)
    )
    result = run_metrics(d["engine"], scope, fast, now=d["now"])
    assert result.source == "rollup" and result.exact_percentiles is False
    assert "rollups" in result.explanation and "approximate" in result.explanation
    assert "±1.0%" in result.explanation  # the same bins on every store
    for needs_raw in (
        MetricQuery(series=("duration_ms.p95",), group_by=("user_id",)),
        MetricQuery(series=("unique_users",)),
        MetricQuery(series=("total_cost.p95",)),
        MetricQuery(series=("request_count",), filters=FilterSpec(search="refund")),
    ):
        result = run_metrics(d["engine"], scope, needs_raw, now=d["now"])
        assert result.source == "raw", needs_raw
    assert (
        run_metrics(
            d["engine"], scope, MetricQuery(series=("duration_ms.p99",), bucket=None), now=d["now"]
        ).exact_percentiles
        is False
    )


def test_buckets_are_complete(metrics_data):
    d = metrics_data
    spec = FilterSpec(relative="24h", models=("gpt-4o",))
    query = MetricQuery(series=("request_count", "duration_ms.avg"), filters=spec, bucket="1hour")
    frame = run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"]).frame
    assert frame.height == 24  # the range starts on the hour, so exactly 24 buckets
    diffs = frame["bucket"].diff().drop_nulls().unique().to_list()
    assert diffs == [timedelta(hours=1)]
    empty = frame.filter(pl.col("request_count.count") == 0)
    assert empty.height > 0, "the data should leave some hours empty"
    assert empty["duration_ms.avg"].null_count() == empty.height  # a gap, not a zero


def test_having_sort_and_limit_pick_groups(metrics_data):
    d = metrics_data
    scope = admin_scope(d["acme"])
    query = MetricQuery(
        series=("total_cost.sum", "request_count"),
        filters=FilterSpec(relative="7d"),
        bucket=None,
        group_by=("model",),
        having=(),
        sort="total_cost.sum",
        limit=2,
    )
    top = run_metrics(d["engine"], scope, query, now=d["now"]).frame
    ref = reference_metrics(
        d["df"], query.filters, d["now"], d["acme"], ("total_cost.sum",), ("model",), None
    ).sort("total_cost.sum", descending=True)
    assert top["model"].to_list() == ref["model"].head(2).to_list()
    series = run_metrics(
        d["engine"], scope, MetricQuery(**{**query.__dict__, "bucket": "1day"}), now=d["now"]
    ).frame
    assert set(series["model"].to_list()) == set(top["model"].to_list())
    from observatory_core.metrics.query import Having

    busy = run_metrics(
        d["engine"],
        scope,
        MetricQuery(
            series=("request_count",),
            bucket=None,
            group_by=("model",),
            having=(Having("request_count.count", ">=", 40),),
            filters=FilterSpec(relative="7d"),
        ),
        now=d["now"],
    ).frame
    assert busy.height > 0 and busy["request_count.count"].min() >= 40


@pytest.mark.parametrize(
    "group,force", [("user_id", "raw"), ("operation", "raw"), ("operation", "rollup")]
)
def test_groups_tied_at_the_cap_are_kept_by_their_own_values(metrics_data, group, force):
    """Past the cap the top groups are kept and the rest folded: groups tied on the figure
    at the cut are taken in order of their values, so every store keeps and folds the same
    ones (before, each store's own row order decided: chDB kept one project, SQLite the
    other)."""
    d = metrics_data
    spec = FilterSpec(relative="7d")
    counts = (
        reference_metrics(d["df"], spec, d["now"], d["acme"], ("span_count.count",), (group,), None)
        .filter(pl.col(group).is_not_null())
        .sort(["span_count.count", group], descending=[True, False])
    )
    figures = counts["span_count.count"].to_list()
    cut = next(k for k in range(1, len(figures)) if figures[k - 1] == figures[k])  # a tie
    query = MetricQuery(series=("span_count.count",), filters=spec, bucket=None, group_by=(group,))
    got = run_metrics(
        d["engine"], admin_scope(d["acme"]), query, now=d["now"], force=force, max_groups=cut
    ).frame
    assert got[group].to_list() == [*counts[group].head(cut).to_list(), OTHER]


def test_previous_period_is_the_same_length_just_before(metrics_data):
    d = metrics_data
    query = MetricQuery(series=("request_count",), filters=FilterSpec(relative="24h"), bucket=None)
    before = query.previous(d["now"])
    assert before.filters.start == d["now"] - timedelta(hours=48)
    assert before.filters.end == d["now"] - timedelta(hours=24)
    got = run_metrics(d["engine"], admin_scope(d["acme"]), before, now=d["now"]).frame
    df = d["df"].filter(
        pl.col("id").is_in(list(reference_llm_calls(d["df"])))  # requests: LLM calls
        & (pl.col("org_id") == d["acme"])
        & (pl.col("start_time") >= before.filters.start)
        & (pl.col("start_time") < before.filters.end)
    )
    assert got["request_count.count"].item() == df.height


def test_scope_limits_metrics_to_the_org_and_projects(metrics_data):
    d = metrics_data
    bot = d["projects"][0]
    scope = admin_scope(d["acme"], project_ids=frozenset({bot}))
    for force in ("raw", "rollup"):
        got = (
            run_metrics(
                d["engine"],
                scope,
                MetricQuery(
                    series=("request_count",), bucket=None, filters=FilterSpec(relative="7d")
                ),
                now=d["now"],
                force=force,
            )
            .frame["request_count.count"]
            .item()
        )
        want = (
            d["df"]
            .filter(
                pl.col("id").is_in(list(reference_llm_calls(d["df"])))  # requests: LLM calls
                & (pl.col("org_id") == d["acme"])
                & (pl.col("project_id") == bot)
                & (pl.col("start_time") >= d["now"] - timedelta(days=7))
                & (pl.col("start_time") < d["now"])
            )
            .height
        )
        assert got == want, force


def test_costs_need_costs_read(metrics_data):
    from observatory_core.base.errors import UserError

    d = metrics_data
    with pytest.raises(UserError, match="cannot see costs"):
        run_metrics(
            d["engine"],
            admin_scope(d["acme"], role=Role.VIEWER),
            MetricQuery(series=("total_cost.sum",)),
            now=d["now"],
        )


def test_percentiles_from_rollups_hold_their_stated_bound(metrics_data):
    """p50 to p95 from rollups (with raw edges) against polars' exact ones over the window's
    requests: the latency bins' ±1% on every store (the span store's, over small groups too:
    tests/metrics/test_span_store_percentiles.py)."""
    d = metrics_data
    series = ("duration_ms.p50", "duration_ms.p90", "duration_ms.p95", "request_count.count")
    start = d["now"] - timedelta(days=6, minutes=7, seconds=13)
    spec = FilterSpec(relative=None, start=start, end=d["now"])
    query = MetricQuery(series=series, filters=spec, bucket=None)
    result = run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"], force="rollup")
    assert result.source == "rollup" and "raw edges" in result.grains
    got = result.frame.to_dicts()[0]
    want = reference_metrics(d["df"], spec, d["now"], d["acme"], series, (), None).to_dicts()[0]
    assert got["request_count.count"] == want["request_count.count"] >= 200
    bound = 0.01 + 1e-9
    for s in series[:3]:
        assert abs(got[s] - want[s]) <= bound * want[s], (s, got[s], want[s])


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_buckets_on_a_zones_clock_match_polars(metrics_data, zone):
    """Days of the zone's calendar, grouped and filtered, from raw spans and from rollups (with
    raw edges: the window is off every minute)."""
    from observatory_core.base.zones import Zone

    d = metrics_data
    spec = FilterSpec(
        relative=None,
        start=d["now"] - timedelta(days=5, hours=3, minutes=7, seconds=13),
        end=d["now"] - timedelta(minutes=3, seconds=41),
        environments=("production",),
    )
    series = ("request_count", "total_cost.sum", "duration_ms.avg", "duration_ms.min")
    for force in ("raw", "rollup"):
        query = MetricQuery(
            series=series, filters=spec, bucket="1day", group_by=("model",), zone=Zone(zone)
        )
        result = run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"], force=force)
        assert result.source == force
        ref = reference_metrics(
            d["df"], spec, d["now"], d["acme"], result.series, ("model",), 86_400, zone=zone
        )
        check(result, ref, ["bucket", "model"])


def test_an_org_sees_only_its_own_spans(metrics_data):
    d = metrics_data
    query = MetricQuery(
        series=("span_count", "total_cost.sum"), filters=FilterSpec(relative="7d"), bucket=None
    )
    for org in (d["acme"], d["globex"]):
        want = reference_metrics(
            d["df"], query.filters, d["now"], org, query.series, (), None
        ).to_dicts()[0]
        assert want["span_count.count"] > 0
        for force in ("raw", "rollup"):
            got = run_metrics(d["engine"], admin_scope(org), query, now=d["now"], force=force)
            row = got.frame.to_dicts()[0]
            assert row["span_count.count"] == want["span_count.count"], (org, force)
            assert abs(row["total_cost.sum"] - want["total_cost.sum"]) <= 1e-9 + 1e-9 * abs(
                want["total_cost.sum"]
            )


def test_a_span_sent_twice_counts_once(metrics_data):
    """The first batch was sent twice (the conftest: to DATABASE_URL, and on the span store to
    it as well): each of its spans counts once, from raw spans and from rollups."""
    d = metrics_data
    resent = {(r["trace_id"], r["span_id"]) for r in d["resend"]}
    df = d["df"].filter(
        pl.struct("trace_id", "span_id").is_in([{"trace_id": t, "span_id": s} for t, s in resent])
    )
    assert df.height == len(resent)  # stored once
    start = df["start_time"].min().replace(second=0, microsecond=0)
    spec = FilterSpec(relative=None, start=start, end=d["now"])
    query = MetricQuery(series=("span_count",), filters=spec, bucket=None)
    want = reference_metrics(d["df"], spec, d["now"], d["acme"], query.series, (), None)
    for force in ("raw", "rollup"):
        got = run_metrics(d["engine"], admin_scope(d["acme"]), query, now=d["now"], force=force)
        assert got.frame["span_count.count"].item() == want["span_count.count"].item(), force


def test_the_estimates_count_the_whole_minutes_groups_and_spans(metrics_data):
    """`known_groups` and `spans_in_range` read the whole rollup rows inside a ragged range
    (minutes, hours and days; on the span store each grain's ranges or'ed in one piece): the
    distinct models of the LLM calls, and the spans, that polars finds between the first and
    the last whole minute of the range."""
    d = metrics_data
    now = d["now"]
    start, end = now - timedelta(days=3, minutes=17, seconds=25), now - timedelta(seconds=13)
    first = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    last = end.replace(second=0, microsecond=0)
    rows = d["df"].filter(
        (pl.col("org_id") == d["acme"])
        & (pl.col("start_time") >= first)
        & (pl.col("start_time") < last)
        & pl.col("duplicate_of").is_null()
    )
    calls = rows.filter(pl.col("id").is_in(list(reference_llm_calls(d["df"]))))
    scope = admin_scope(d["acme"])
    spec = FilterSpec(relative=None, start=start, end=end)
    models = known_groups(d["engine"], scope, Subject.LLM_CALLS, ("model",), spec, start, end)
    assert models == calls["model"].n_unique() > 1
    assert spans_in_range(d["engine"], scope, spec, start, end) == rows.height > 0
