"""Alerts on the ClickHouse span store (docs/span-store-internals.md, "Reports and alerts"):
a cycle reads the rules' spans and rollups from the span store's engine and keeps rules,
states and events in DATABASE_URL; a backtest and a replayed history read the span store. The
data set is the metrics tests' chDB copy (tests/metrics/conftest.py), its DATABASE_URL the
SQLite database it was copied from (the same orgs, the same spans).
"""

# ruff: noqa: F811
# (the shared data set's fixtures are imported by name)

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import delete, select

from observatory_core.alerts import shared_windows as shared
from observatory_core.alerts.backtest import backtest, replay
from observatory_core.alerts.evaluate import evaluate
from observatory_core.alerts.replayed import write_replayed_history
from observatory_core.alerts.rules import build_rule, create_rule
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.metrics import sample_series
from observatory_core.storage.schema import alert_events, alert_rules, alert_states
from tests.helpers import admin_scope
from tests.metrics.conftest import metrics_data, metrics_store, pytest_generate_tests  # noqa: F401
from tests.metrics.reference import reference_metrics, reference_trace_metrics

DAY = 86_400


@pytest.fixture
def database(metrics_data):
    """DATABASE_URL's engine, its rules, states and events removed after the test (the data set
    is the session's)."""
    yield metrics_data["database"]
    with metrics_data["database"].begin() as conn:
        for table in (alert_events, alert_states, alert_rules):
            conn.execute(delete(table))


def _by_model(data, seconds: int) -> dict:
    now = data["now"]
    spec = FilterSpec(relative=None, start=now - timedelta(seconds=seconds), end=now)
    want = reference_metrics(
        data["df"], spec, now, data["acme"], ("request_count.count",), ("model",), None
    )
    return {m or "(none)": n for m, n in want.select("model", "request_count.count").iter_rows()}


def _traces(data, seconds: int) -> int:
    now = data["now"]
    spec = FilterSpec(relative=None, start=now - timedelta(seconds=seconds), end=now)
    series = ("trace_count.count",)
    frame = reference_trace_metrics(data["df"], spec, now, data["acme"], series, (), None)
    return int(frame["trace_count.count"].sum())


def test_a_cycle_fires_the_breaching_model_only_and_steps_trace_rules(metrics_data, database):
    """A rule per model fires for the busiest one only, with polars' counts; a rule on traces
    is stepped like any other (the store's trace totals), with polars' count of traces."""
    data, now = metrics_data, metrics_data["now"]
    scope = admin_scope(data["acme"])
    counts = sorted(_by_model(data, DAY).items(), key=lambda kv: -kv[1])
    (top, most), (_, next_most) = counts[0], counts[1]
    assert most > next_most  # one model above the threshold, the others below
    spans_rule = build_rule(
        name="busy model",
        series="request_count.count",
        comparator=">",
        threshold=(most + next_most) / 2,
        window_s=DAY,
        group_by="model",
    )
    traces_rule = build_rule(
        name="any trace", series="trace_count.count", comparator=">", threshold=0, window_s=DAY
    )
    busy = create_rule(database, scope, spans_rule, now=now)
    traced = create_rule(database, scope, traces_rule, now=now)
    evaluate(database, now, spans=data["engine"])
    with database.connect() as conn:
        rows = conn.execute(select(alert_states)).mappings().all()
    states = {r["group_key"]: r for r in rows if r["rule_id"] == busy}
    assert states[top]["state"] == "firing" and states[top]["last_value"] == most
    assert {k for k, s in states.items() if s["state"] == "firing"} == {top}
    assert {k: s["last_value"] for k, s in states.items()} == {k: float(n) for k, n in counts}
    (trace_state,) = [r for r in rows if r["rule_id"] == traced]
    assert trace_state["state"] == "firing"
    assert trace_state["last_value"] == _traces(data, DAY) > 0


def test_a_backtest_and_its_replayed_history_read_the_span_store(metrics_data, database):
    """Hourly requests over five days: the buckets are polars' counts, and the firings those of
    the same rule replayed on DATABASE_URL's copy of the spans."""
    data, now = metrics_data, metrics_data["now"]
    scope = admin_scope(data["acme"])
    spec = FilterSpec(relative=None, start=now - timedelta(days=5), end=now)
    hourly = reference_metrics(
        data["df"], spec, now, data["acme"], ("request_count.count",), (), 3600
    )
    threshold = float(hourly["request_count.count"].quantile(0.8))
    rule = build_rule(
        name="busy hour",
        series="request_count.count",
        comparator=">",
        threshold=threshold,
        window_s=3600,
    )
    frame, bucket, transitions, _ = replay(data["engine"], scope, rule, days=5, now=now)
    assert bucket == "1hour"
    counted = dict(frame.filter(pl.col("value") > 0).select("bucket", "value").iter_rows())
    assert counted == {
        b: float(n) for b, n in hourly.select("bucket", "request_count.count").iter_rows() if n
    }
    _, _, on_database, _ = replay(database, scope, rule, days=5, now=now)
    assert [(t.at, t.after) for t in transitions] == [(t.at, t.after) for t in on_database]
    result = backtest(data["engine"], scope, rule, days=5, now=now)
    fired = sum(t.after == "firing" for t in on_database)
    assert result.fired == fired > 0
    rule_id = create_rule(database, scope, rule, now=now)
    written = write_replayed_history(
        database, scope, rule_id, rule, days=5, now=now, spans=data["engine"]
    )
    assert written == len(on_database)


SHAPES_SERIES = (
    "duration_ms.p95",
    "ttft_ms.p90",
    "total_cost.sum",
    "total_tokens.sum",
    "error_rate.avg",
    "output_tokens.avg",
)


def test_an_exact_windows_batches_read_together_give_polars_figures(metrics_data, database):
    """The batches of one window read in one grouping-sets statement (alerts/shared_windows.py):
    each shape's figures (no filter, a model, an environment, both; by model or not) are polars'
    on the same spans, and a model without spans gives a zero count (its sum 0, no p95). A cycle
    reads such batches of a window in one statement."""
    data, now = metrics_data, metrics_data["now"]
    start = now - timedelta(days=3)
    inside = data["df"].filter(
        (pl.col("org_id") == data["acme"])
        & (pl.col("start_time") >= start)
        & (pl.col("start_time") < now)
        & pl.col("model").is_not_null()
    )
    model = inside["model"].mode().sort()[0]
    environment = inside["environment"].mode().sort()[0]
    shapes = [
        ({}, None),
        ({}, "model"),
        ({"models": (model,)}, None),
        ({"models": (model,)}, "model"),
        ({"environments": (environment,)}, "model"),
        ({"models": (model,), "environments": (environment,)}, None),
        ({"models": ("no such model",)}, None),
    ]
    batches, expected, rule_id = [], {}, 0
    for filters, group_by in shapes:
        spec = FilterSpec(relative=None, **filters)
        shape = shared.shape_of(spec.to_json(), group_by)
        assert shape is not None
        members = []
        for series in SHAPES_SERIES:
            rule_id += 1
            members.append({"id": rule_id, "series": series})
            window = spec.replace(start=start, end=now)
            sample = sample_series(series)
            want = reference_metrics(
                data["df"],
                window,
                now,
                data["acme"],
                (series, sample),
                (group_by,) if group_by else (),
                None,
            )
            expected[rule_id] = {
                (row[group_by] or "(none)") if group_by else "": (row[series], row[sample])
                for row in want.iter_rows(named=True)
            }
        batches.append((shape, members))
    subject = shared.subject_of([m for _, members in batches for m in members])
    got = shared.read_together(
        data["engine"], data["acme"], subject, batches, start, now, "clickhousedb", 1000
    )
    assert got is not None and got.keys() == expected.keys()
    empty = {r["id"] for r in batches[-1][1]}
    for rule in (r for _, members in batches for r in members):
        want = expected[rule["id"]]
        if rule["id"] in empty:  # polars has no row for no spans: the engine's one row of none
            zero = rule["series"].endswith(".sum")
            assert got[rule["id"]] == {"": (0.0 if zero else None, 0)}
            continue
        assert got[rule["id"]].keys() == want.keys(), rule
        for key, (value, count) in want.items():
            value_got, count_got = got[rule["id"]][key]
            assert count_got == count
            if value is None:
                assert value_got is None or (rule["series"].endswith(".sum") and value_got == 0)
            else:
                assert value_got == pytest.approx(value, rel=1e-9), (rule, key)
    # a cycle: two exact-window batches read in one statement, and two of a day whose series
    # the rollups cannot answer (a TTFT percentile) in another; two of a day the rollups
    # answer (latency's bins) read apart
    scope = admin_scope(data["acme"])
    rules = [
        ("duration_ms.p95", 3600, shapes[:2]),
        ("ttft_ms.p90", DAY, shapes[:2]),
        ("duration_ms.p95", DAY, shapes[2:4]),  # batches of their own (another filter)
    ]
    for series, window, kinds in rules:
        for filters, group_by in kinds:
            create_rule(
                database,
                scope,
                build_rule(
                    name=f"{series} {window} {group_by}",
                    series=series,
                    comparator=">",
                    threshold=1e9,
                    window_s=window,
                    filters=FilterSpec(relative=None, **filters),
                    group_by=group_by,
                ),
                now=now,
            )
    report = evaluate(database, now, spans=data["engine"])
    assert report.queries == 4
