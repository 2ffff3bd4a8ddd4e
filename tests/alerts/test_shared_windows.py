"""The alert cycle's shared grouping-sets statement
(`alerts/shared_windows.py`) against the per-batch path on the same chDB span store, on the
edges: NULL and empty models and environments, a filter naming a value without spans (or
only another org's), group-by and filter on the same key, twins, LLM calls against spans,
percentiles and shares, the groups' cap, windows over an hour the rollups cannot answer."""

from __future__ import annotations

import itertools
import json
import random
from datetime import timedelta

import polars as pl
import pytest

from observatory_core.alerts import evaluate as ev
from observatory_core.alerts import shared_windows as shared
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.metrics import sample_series
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.stores.clickhouse import ClickHouseStore
from tests.helpers import span
from tests.traces.conftest import NOW

ORG_A, ORG_B = 901, 902
MODELS = ("m1", "m2", None, "")
ENVIRONMENTS = ("production", "staging", "")  # NOT NULL on the span store
SERIES = (
    "request_count.count",
    "duration_ms.p95",
    "ttft_ms.p90",
    "total_cost.sum",
    "error_rate.avg",
    "output_tokens.avg",
    "error_count.count",
    "tokens_per_second.avg",
)
SPAN_SERIES = ("span_count.count", "unique_users.count", "quality_score.p50")


def _rows() -> list[dict]:
    rng = random.Random(17)
    rows = []
    for org, models, envs in (
        (ORG_A, MODELS, ENVIRONMENTS),
        (ORG_B, ("m1", "onlyB", None), ("production", "onlyB")),
    ):
        for offset in (1, 30, 59, 61, 90, 119, 200):  # minutes before now
            for model, env, op in itertools.product(models, envs, ("chat", "execute_tool")):
                for _ in range(rng.randrange(1, 4)):
                    start = NOW - timedelta(minutes=offset, seconds=rng.randrange(0, 59))
                    tokens = rng.randrange(0, 2000)
                    rows.append(
                        span(
                            org,
                            1,
                            start,
                            operation=op,
                            model=model,
                            provider="openai" if model is not None else None,
                            environment=env,
                            status=rng.choice(["ok", "ok", "error"]),
                            duration_ms=round(rng.lognormvariate(6, 1), 3),
                            ttft_ms=rng.choice([None, round(rng.uniform(1, 400), 3)]),
                            input_tokens=tokens,
                            output_tokens=tokens // 3,
                            input_cost_usd=round(tokens * 2.5e-6, 9),
                            output_cost_usd=round(tokens // 3 * 1e-5, 9),
                            user_id=f"u{rng.randrange(5)}",
                            quality_score=rng.choice([None, round(rng.random(), 3)]),
                            duplicate_of=rng.choice([None] * 5 + ["00000000000abcde"]),
                        )
                    )
    # the window's edges: one span at exactly now - 1h (inside), one at now (outside)
    rows.append(span(ORG_A, 1, NOW - timedelta(hours=1), model="m1", environment="production"))
    rows.append(span(ORG_A, 1, NOW, model="m1", environment="production"))
    return rows


@pytest.fixture(scope="module")
def store(chdb_store):
    rows = _rows()
    assert write_spans(chdb_store, rows) == len(rows)
    return chdb_store


SHAPES = [
    ({}, None),
    ({}, "model"),
    ({}, "environment"),
    ({"models": ("m1",)}, None),
    ({"models": ("m1",)}, "model"),
    ({"models": ("m1",)}, "environment"),
    ({"environments": ("production",)}, None),
    ({"environments": ("production",)}, "environment"),
    ({"environments": ("staging",)}, "model"),
    ({"models": ("m2",), "environments": ("staging",)}, None),
    ({"models": ("m2",), "environments": ("staging",)}, "model"),
    ({"models": ("m2",), "environments": ("production",)}, "environment"),
    ({"models": ("no such model",)}, None),
    ({"models": ("no such model",)}, "environment"),
    ({"models": ("onlyB",)}, None),  # another org's model
    ({"environments": ("onlyB",)}, "model"),
]


def _rules(org: int, shapes, series, window_s: int, first_id: int = 1) -> list[dict]:
    rules, ids = [], itertools.count(first_id)
    for filters, group_by in shapes:
        spec = FilterSpec(relative=None, **filters)
        for s in series:
            rules.append(
                {
                    "id": next(ids),
                    "org_id": org,
                    "filter_json": spec.to_json(),
                    "window_s": window_s,
                    "group_by": group_by,
                    "series": s,
                    "kind": "threshold",
                    "baseline_weeks": 0,
                    "min_requests": 0,
                    "system_kind": None,
                }
            )
    return rules


def _both_ways(engine, rules, monkeypatch):
    shared_obs, _, shared_q = ev._observe_metric_rules(engine, rules, NOW)
    monkeypatch.setattr(ClickHouseStore, "shares_alert_windows", False)
    apart_obs, _, apart_q = ev._observe_metric_rules(engine, rules, NOW)
    monkeypatch.setattr(ClickHouseStore, "shares_alert_windows", True)
    return shared_obs, shared_q, apart_obs, apart_q


def _assert_same(got: dict, want: dict, rules) -> None:
    by_id = {r["id"]: r for r in rules}
    assert got.keys() == want.keys()
    for rule_id, groups in want.items():
        rule = by_id[rule_id]
        where = (rule["filter_json"], rule["group_by"], rule["series"], rule["window_s"])
        assert got[rule_id].keys() == groups.keys(), where
        for key, (value, count) in groups.items():
            value_got, count_got = got[rule_id][key]
            assert count_got == count, (where, key)
            if value is None:
                assert value_got is None, (where, key)
            else:
                assert value_got == pytest.approx(value, rel=1e-9), (where, key)


@pytest.mark.parametrize("window_s", [3600, 7200])
@pytest.mark.parametrize("series", [SERIES, SPAN_SERIES], ids=["llm_calls", "spans"])
def test_shared_equals_per_batch_on_every_shape(store, monkeypatch, window_s, series):
    """Every shape of both orgs: the shared statements' values and request counts equal the
    per-batch path's, group by group (NULL and empty keys, no spans, other org's values)."""
    if window_s > 3600:  # over an hour only the series the rollups cannot answer share
        series = tuple(s for s in series if s.startswith(("ttft_ms", "tokens_per", "quality")))
    rules = _rules(ORG_A, SHAPES, series, window_s)
    rules += _rules(ORG_B, SHAPES, series, window_s, first_id=len(rules) + 1)
    got, shared_q, want, apart_q = _both_ways(store.engine, rules, monkeypatch)
    assert shared_q < apart_q  # the shared path was taken
    _assert_same(got, want, rules)


def test_null_and_empty_keys_are_groups_of_their_own(store, monkeypatch):
    """A real NULL model is "(none)" and an empty one "": told apart from the rolled-up
    rows of the other sets, with polars' counts on the raw rows."""
    rules = _rules(
        ORG_A, [({}, "model"), ({}, "environment"), ({}, None)], ["span_count.count"], 3600
    )
    got, *_ = _both_ways(store.engine, rules, monkeypatch)
    rows = store.client.query(
        f"SELECT model, environment, duplicate_of FROM {store.table('spans')} "
        f"WHERE org_id = {ORG_A} AND start_time >= '{(NOW - timedelta(hours=1)):%Y-%m-%d %H:%M:%S}'"
        f" AND start_time < '{NOW:%Y-%m-%d %H:%M:%S}'"
    ).result_rows
    df = pl.DataFrame(rows, schema=["model", "environment", "duplicate_of"], orient="row")
    df = df.filter(pl.col("duplicate_of").is_null())
    for rule, key in zip(rules, ("model", "environment", None), strict=True):
        if key is None:
            assert got[rule["id"]] == {"": (float(df.height), df.height)}
            continue
        want = {
            ("(none)" if v is None else v): float(n) for v, n in df.group_by(key).len().iter_rows()
        }
        assert {k: v for k, (v, _) in got[rule["id"]].items()} == want
        assert "" in want  # the probe holds the empty value
        if key == "model":
            assert "(none)" in want


def test_groups_past_the_cap_fold_as_per_batch(store, monkeypatch):
    """Past MAX_ALERT_GROUPS the shared read gives up and the batches are read apart: the same
    "(other)" folding (grouped by environment: a NULL model cannot fold on chDB, below)."""
    monkeypatch.setattr(ev, "MAX_ALERT_GROUPS", 2)
    shapes = [s for s in SHAPES if s[1] != "model"]
    rules = _rules(ORG_A, shapes, ("request_count.count", "duration_ms.p95"), 3600)
    got, _, want, _ = _both_ways(store.engine, rules, monkeypatch)
    _assert_same(got, want, rules)
    assert any("(other)" in groups for groups in got.values())


def test_a_null_model_folds_past_the_cap(store, monkeypatch):
    """The fold's key cast the Nullable model to a non-Nullable String on ClickHouse, which
    refuses a NULL: an alert grouped by model past the cap (and any metrics answer by model
    past `metrics_max_groups`) failed on chDB."""
    monkeypatch.setattr(ev, "MAX_ALERT_GROUPS", 2)
    rules = _rules(ORG_A, [({}, "model"), ({}, None)], ("request_count.count",), 3600)
    got, *_ = _both_ways(store.engine, rules, monkeypatch)
    assert "(other)" in got[1]


def test_filter_and_group_by_same_key_with_sample(store, monkeypatch):
    """A filter on m1 grouped by model: one group m1, its sample the LLM calls."""
    rules = _rules(ORG_A, [({"models": ("m1",)}, "model"), ({}, None)], ("duration_ms.p95",), 3600)
    got, *_ = _both_ways(store.engine, rules, monkeypatch)
    assert list(got[1]) == ["m1"]
    assert sample_series("duration_ms.p95") == "request_count.count"


def test_no_span_in_the_window_at_all(store, monkeypatch):
    """An org without spans: both ways the same (the totals' row over none)."""
    rules = _rules(999, SHAPES[:8], SERIES + ("unique_users.count",), 3600)
    rules = [r for r in rules if r["series"] != "unique_users.count"] + _rules(
        999, SHAPES[:8], ("unique_users.count", "span_count.count"), 3600, first_id=10_000
    )
    got, _, want, _ = _both_ways(store.engine, rules, monkeypatch)
    _assert_same(got, want, rules)


def test_json_is_stable(store):
    assert json.loads(FilterSpec(relative=None, models=("m1",)).to_json())
    assert shared.shape_of(FilterSpec(relative=None).to_json(), None) is not None


def test_metrics_by_model_past_the_cap_with_a_null_model(store):
    """Pre-existing, the same cast: the metrics engine's answer by model past `max_groups`
    (the Metrics page's default 100) read from spans (a percentile, a group-by the rollups
    lack, an exact window) fails on chDB when a group's model is NULL (every tool span's);
    from rollups it folds."""
    from observatory_core.metrics.engine import run_metrics
    from observatory_core.metrics.query import MetricQuery
    from tests.helpers import admin_scope

    query = MetricQuery(
        series=("span_count.count",),
        filters=FilterSpec(relative=None, start=NOW - timedelta(hours=4), end=NOW),
        bucket=None,
        group_by=("model",),
    )
    for force in ("rollup", "raw"):  # raw: as windows up to an hour, exact percentiles
        got = run_metrics(
            store.engine, admin_scope(ORG_A), query, now=NOW, max_groups=2, force=force
        )
        assert "(other)" in got.frame["model"].to_list(), force


def test_the_whole_table_selected(store):
    """`select(spans)` names every column, the stored id among them (schema version 8): the
    table itself answers it (with the derived table it was refused)."""
    from sqlalchemy import select

    from observatory_core.storage.schema import spans

    query = select(spans).where(spans.c.org_id == ORG_A).limit(1)
    with store.engine.connect() as conn:
        assert len(conn.execute(query).all()) == 1


def test_metadata_key_past_the_cap_with_missing_values(store):
    """The same fold over a metadata key some spans lack (NULL there): raw, past the cap, on
    chDB; the groups and "(other)" as polars counts them."""
    from observatory_core.metrics.engine import run_metrics
    from observatory_core.metrics.query import MetricQuery
    from tests.helpers import admin_scope

    org, regions = 903, ["eu", "eu", "eu", "us", "us", "ap", None, None, None, None]
    rows = [
        span(org, 1, NOW - timedelta(minutes=5 + i), metadata={"region": r} if r else {})
        for i, r in enumerate(regions)
    ]
    write_spans(store, rows)
    query = MetricQuery(
        series=("span_count.count",),
        filters=FilterSpec(relative=None, start=NOW - timedelta(hours=1), end=NOW),
        bucket=None,
        group_by=("metadata:region",),
    )
    got = run_metrics(store.engine, admin_scope(org), query, now=NOW, max_groups=2, force="raw")
    counts = dict(got.frame.iter_rows())
    assert counts == {None: 4, "eu": 3, "(other)": 3}
