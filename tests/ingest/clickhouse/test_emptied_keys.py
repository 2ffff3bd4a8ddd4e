"""A rollup key that a wrapper move empties with opposite rows, not a DELETE, on the ClickHouse
span store: two wrappers alone in their key (project, provider, model, environment,
operation), each counted as an LLM call, whose calls (another project, provider, model,
environment, operation) arrive in two later batches. The first move leaves its negative row
unmerged, so the second move adds its opposite instead of deleting the key's rows
(`storage/clickhouse/wrapper_moves.py`), and the key's rows add up to no span at every grain
(docs/span-store-internals.md, "Wrapper moves and their journal"). No read may list that key: a
group or a time bucket with no LLM call is not one (SQLite lists none). The metrics engine's
groupings and buckets (from the rollups and across their raw edges), the Overview's top lists and
cost per day by model, the groups counted before a read, the alerts' groups and the value lists,
each against SQLite given the same batches and against polars over the rows sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy.engine import Engine

from observatory_core.alerts.evaluate import _batch_reader
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest import persist, to_clickhouse
from observatory_core.metrics.catalog import Subject
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.estimate import known_groups
from observatory_core.metrics.query import MetricQuery
from observatory_core.reports.overview import cost_per_day_by_model, period_overview, top
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.traces.values import distinct_values
from tests.helpers import admin_scope, child_of, make_org
from tests.ingest.clickhouse.test_late_llm_calls import (
    DAY,
    GRAINS,
    T0,
    _extremes_applied,
    _reference,
    _wrapper,
)

# the wrappers' key, which their moves empty
ALONE = dict(provider="anthropic", model="claude-3-haiku", environment="staging")
# their calls' (in an hour of their own: the wrappers' hour holds no LLM call afterwards)
CALLS = dict(provider="openai", model="gpt-4o", environment="production")


def _call_under(wrapper: dict, project: int, minutes: int, duration: float) -> dict:
    call = child_of(wrapper, wrapper["start_time"] + timedelta(minutes=minutes), **CALLS,
                    duration_ms=duration, input_tokens=10, output_tokens=2,
                    input_cost_usd=0.001)  # fmt: skip
    return dict(call, project_id=project)


def _batches(org: int, main: int, side: int) -> list[list[dict]]:
    """The wrappers (project `side`, one minute), then each one's call (project `main`) in a
    batch of its own."""
    a = _wrapper(org, side, T0 + timedelta(seconds=1), 500.0, 0.01, **ALONE)
    b = _wrapper(org, side, T0 + timedelta(seconds=3), 700.0, 0.02, **ALONE)
    return [[a, b], [_call_under(a, main, 65, 400.0)], [_call_under(b, main, 66, 600.0)]]


WINDOWS = {
    "day": (DAY, DAY + timedelta(days=1)),
    "hour": (T0 - timedelta(minutes=5), T0 + timedelta(minutes=55)),  # the wrappers' alone
    "minute": (T0, T0 + timedelta(minutes=1)),
    # raw edges at both ends (no span in them) around the wrappers' minute
    "ragged": (T0 - timedelta(seconds=30), T0 + timedelta(minutes=1, seconds=30)),
}
GROUPS = ("model", "provider", "environment", "operation", "project", "status")
SERIES = (
    "request_count.count",
    "total_tokens.sum",
    "total_cost.sum",
    "duration_ms.max",
    "duration_ms.p95",
)
COARSE = ("rollup_1hour", "rollup_1day")


@dataclass
class Emptied:
    store: SpanStore
    org: int
    sqlite: Engine
    sqlite_org: int
    names: dict[str, dict[int, str]]  # store -> project id -> name
    ref: pl.DataFrame  # the rows sent, `llm_call` by the rule (polars)


def _merges_held(store: SpanStore, held: bool) -> None:
    """No merge of the rollups' parts (their mutations still run), as a busy server leaves
    the first move's negative row unmerged a while before the second move."""
    for table in GRAINS:
        store.client.command(
            f"ALTER TABLE {store.table(table)} MODIFY SETTING "
            "max_bytes_to_merge_at_max_space_in_pool = 1"
            if held
            else f"ALTER TABLE {store.table(table)} "
            "RESET SETTING max_bytes_to_merge_at_max_space_in_pool"
        )


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory):
    engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp('emptied-sqlite') / 'o.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def emptied(ch_ingest, sqlite) -> Emptied:
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main, side) = make_org(engine, "emptied-keys", ("main", "side"))
    batches = _batches(org, main, side)
    _merges_held(store, True)
    try:
        for batch in batches:
            assert to_clickhouse.write_spans(store, engine, batch) == len(batch)
            _extremes_applied(store)
    finally:
        _merges_held(store, False)
    sqlite_org, (s_main, s_side) = make_org(sqlite, "emptied-keys", ("main", "side"))
    ids = {main: s_main, side: s_side}
    patch = pytest.MonkeyPatch()
    patch.setattr(persist, "span_store", lambda: None)
    try:
        for batch in batches:
            persist.write_spans(
                sqlite, [dict(r, org_id=sqlite_org, project_id=ids[r["project_id"]]) for r in batch]
            )
    finally:
        patch.undo()
    names = {"ch": {main: "main", side: "side"}, "sqlite": {s_main: "main", s_side: "side"}}
    ref = _reference([r for batch in batches for r in batch])
    ref = ref.with_columns(pl.col("project_id").replace_strict(names["ch"]).alias("project"))
    return Emptied(store, org, sqlite, sqlite_org, names, ref)


def _on(emptied: Emptied, store: str) -> tuple[Engine, int, dict[int, str]]:
    if store == "ch":
        return emptied.store.engine, emptied.org, emptied.names["ch"]
    return emptied.sqlite, emptied.sqlite_org, emptied.names["sqlite"]


def _named(frame: pl.DataFrame, names: dict[int, str]) -> list[dict]:
    """The frame's rows, a project by its name (each store numbers its own)."""
    if "project" in frame.columns:
        frame = frame.with_columns(pl.col("project").replace_strict(names, default=None))
    return frame.to_dicts()


def _same(got: list[dict], want: list[dict]) -> None:
    """The same rows; costs to their last bits (the opposite rows' negated sums are added in
    another order than SQLite's)."""
    cost = "total_cost.sum"
    assert [{k: v for k, v in r.items() if k != cost} for r in got] == [
        {k: v for k, v in r.items() if k != cost} for r in want
    ]
    assert [r.get(cost) for r in got] == pytest.approx([r.get(cost) for r in want])


def test_the_wrappers_key_is_emptied_by_opposite_rows(emptied):
    """The state the reads below are about: at every grain the key's rows keyed true are still
    there (a negative row among them, or merged into one of none) and add up to no span."""
    store = emptied.store
    for table in GRAINS:
        result = store.client.query(
            f"SELECT count(), sum(span_count), sum(total_tokens_sum) FROM {store.table(table)} "
            "WHERE org_id = %(org)s AND llm_call AND model = 'claude-3-haiku'",
            parameters={"org": emptied.org},
        )
        rows, spans, tokens = result.result_rows[0]
        assert rows > 0 and spans == 0 and tokens == 0, (table, rows, spans, tokens)


def _want(ref: pl.DataFrame, window: str, by: tuple[str, ...]) -> list[dict]:
    """Polars over the rows sent: the LLM calls of the window, grouped."""
    start, end = WINDOWS[window]
    calls = ref.filter(pl.col("llm_call") & pl.col("start_time").is_between(start, end, "left"))
    aggs = [
        pl.len().alias("request_count.count"),
        pl.col("total_tokens").sum().alias("total_tokens.sum"),
    ]
    if not by:
        return calls.select(aggs).to_dicts()
    return calls.group_by(list(by)).agg(aggs).sort(list(by)).to_dicts()


def _metrics(emptied, store: str, window: str, by: tuple[str, ...], bucket=None, fill=False):
    engine, org, names = _on(emptied, store)
    start, end = WINDOWS[window]
    query = MetricQuery(
        series=SERIES,
        filters=FilterSpec(relative=None, start=start, end=end),
        bucket=bucket,
        group_by=by,
    )
    result = run_metrics(engine, admin_scope(org), query, now=end, fill=fill)
    if store == "ch":
        assert result.source == "rollup", result.grains
        assert ("raw edges" in result.grains) == (window == "ragged"), result.grains
    keys = [c for c in ("bucket", *by) if c in result.frame.columns]
    return _named(result.frame.sort(keys) if keys else result.frame, names)


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("by", GROUPS)
def test_a_grouping_lists_no_group_of_no_calls(emptied, window, by):
    got = _metrics(emptied, "ch", window, (by,))
    _same(got, _metrics(emptied, "sqlite", window, (by,)))
    counted = [{k: r[k] for k in (by, *SERIES[:2])} for r in got]
    assert counted == _want(emptied.ref, window, (by,))


@pytest.mark.parametrize("window", list(WINDOWS))
def test_all_spans_by_llm_call_list_no_group_of_none(emptied, window):
    """Over every span (the wrappers counted, not as LLM calls): no "yes" group of none."""
    start, end = WINDOWS[window]
    query = MetricQuery(
        series=("span_count.count",),
        filters=FilterSpec(relative=None, start=start, end=end),
        bucket=None,
        group_by=("llm_call",),
    )
    got = [
        run_metrics(engine, admin_scope(org), query, now=end).frame.sort("llm_call").rows()
        for engine, org, _ in (_on(emptied, "ch"), _on(emptied, "sqlite"))
    ]
    spans = emptied.ref.filter(pl.col("start_time").is_between(start, end, "left"))
    want = (
        spans.group_by(pl.when("llm_call").then(pl.lit("yes")).otherwise(pl.lit("no")))
        .len()
        .sort("literal")
        .rows()
    )
    assert got[0] == got[1] == want


@pytest.mark.parametrize("fill", [False, True])
@pytest.mark.parametrize("by", [(), ("model",), ("project", "operation")])
def test_the_hours_list_no_bucket_of_no_calls(emptied, by, fill):
    """Hourly buckets of the day: the wrappers' hour holds no LLM call (filled as SQLite
    fills it, or left out), and no group of none is filled across the day."""
    got = _metrics(emptied, "ch", "day", by, bucket="1hour", fill=fill)
    _same(got, _metrics(emptied, "sqlite", "day", by, bucket="1hour", fill=fill))
    if not fill:
        ref = emptied.ref.with_columns(pl.col("start_time").dt.truncate("1h").alias("bucket"))
        want = _want(ref, "day", ("bucket", *by))
        keys = ("bucket", *by, *SERIES[:2])
        assert [{k: r[k] for k in keys} for r in got] == [
            dict(r, bucket=r["bucket"].replace(tzinfo=got[0]["bucket"].tzinfo)) for r in want
        ]


@pytest.mark.parametrize("by", ["cost", "requests"])
def test_the_overviews_top_models_and_cost_per_day(emptied, by):
    start, end = WINDOWS["day"]
    spec = FilterSpec(relative=None, start=start, end=end)
    answers = []
    for store in ("ch", "sqlite"):
        engine, org, names = _on(emptied, store)
        scope = admin_scope(org)
        tops = top(engine, scope, spec, "model", by, now=end).frame
        per_day = cost_per_day_by_model(engine, scope, spec, now=end).frame
        answers.append((tops.to_dicts(), per_day.sort("bucket", "model").to_dicts()))
    for got, want in zip(answers[0], answers[1], strict=True):
        _same(got, want)
    assert [r["model"] for r in answers[0][0]] == ["gpt-4o"]


@pytest.mark.parametrize("window", ["day", "hour"])
def test_the_overviews_figures(emptied, window):
    """The period's and the one before's totals (read in one statement on the span store, a
    window of no span given no row there): the wrappers' hour holds no request."""
    start, end = WINDOWS[window]
    spec = FilterSpec(relative=None, start=start, end=end)
    kpis = []
    for store in ("ch", "sqlite"):
        engine, org, _ = _on(emptied, store)
        overview = period_overview(engine, admin_scope(org), spec, now=end)
        kpis.append({k.key: (k.current, k.previous) for k in overview.kpis})
    assert kpis[0].keys() == kpis[1].keys()
    for key, (current, previous) in kpis[0].items():
        assert (current, previous) == pytest.approx(kpis[1][key]), key
    requests = len(_want(emptied.ref, window, ("model",)))  # one model of 2 calls, or none
    assert kpis[0]["requests"][0] == 2 * requests


@pytest.mark.parametrize("window", ["day", "hour"])
def test_the_groups_counted_before_a_read(emptied, window):
    """`known_groups`, the groups the cells cap is judged by before a read."""
    start, end = WINDOWS[window]
    spec = FilterSpec(relative=None, start=start, end=end)
    for by in GROUPS:
        counts = [
            known_groups(engine, admin_scope(org), Subject.LLM_CALLS, (by,), spec, start, end)
            for engine, org, _ in (_on(emptied, "ch"), _on(emptied, "sqlite"))
        ]
        assert counts[0] == counts[1] == len(_want(emptied.ref, window, (by,))), by


def test_the_alerts_groups(emptied):
    """A rule's window of a day read from the rollups, one alert per model: no model of no
    requests judged."""
    start, end = WINDOWS["day"]
    rule = {"id": 1, "series": "request_count.count"}
    seen = []
    for engine, org, _ in (_on(emptied, "ch"), _on(emptied, "sqlite")):
        read = _batch_reader(engine, admin_scope(org), FilterSpec().to_json(), "model", end)
        seen.append(read([rule], start, end, exact=False))
    assert seen[0] == seen[1] == {1: {"gpt-4o": (2.0, 2)}}


def test_the_value_lists(emptied):
    """Read from the spans, which hold the wrappers: the same values on both stores."""
    for column in ("model", "provider", "environment", "operation"):
        lists = [
            distinct_values(engine, admin_scope(org), column, now=WINDOWS["day"][1], days=None)
            for engine, org, _ in (_on(emptied, "ch"), _on(emptied, "sqlite"))
        ]
        assert lists[0] == lists[1] == sorted(emptied.ref[column].unique().to_list())
