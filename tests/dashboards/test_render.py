"""Each chart of the starter dashboards against polars over the raw rows, on both stores: the
numbers a dashboard shows are the metrics engine's under the page's period and filters, a
chart's own filter narrows them, and a role never gets a number it may not see."""

from __future__ import annotations

import contextvars
import threading
from dataclasses import replace

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.tenancy import org_id_by_slug
from observatory_core.dashboards.model import Dashboard, chart_from_dict, from_dict
from observatory_core.dashboards.render import (
    HIDDEN,
    LOADERS,
    change,
    each_chart,
    load_dashboard,
    total,
)
from observatory_core.demo.starter_dashboards import STARTER_DASHBOARDS
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.folding import OTHER
from tests.helpers import END, admin_scope
from tests.metrics import reference
from tests.metrics.reference import reference_metrics
from tests.metrics.test_engine import _tolerance

SPEC = FilterSpec(relative="24h")  # the demo's last day: the day before it has data too


@pytest.fixture(scope="module")
def shown(demo_store):
    """Every starter chart's data as an admin sees it over the demo's last three days."""
    engine = demo_store["engine"]
    with engine.connect() as conn:
        org_id = org_id_by_slug(conn, "acme")
    scope = admin_scope(org_id)

    def run(query, top):
        return run_metrics(engine, scope, query, now=END, max_groups=top)

    boards = {d["name"]: from_dict(d) for d in STARTER_DASHBOARDS}
    datas = {n: load_dashboard(run, scope, b, SPEC) for n, b in boards.items()}
    llm_calls = reference.reference_llm_calls(demo_store["df"])  # the same rows all along
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reference, "reference_llm_calls", lambda df: llm_calls)
        yield {**demo_store, "org_id": org_id, "run": run, "datas": datas}


def _reference(d, data, spec=SPEC, now=END):
    result = data.result
    return reference_metrics(
        d["df"], spec, now, d["org_id"], result.series, result.group_by, result.bucket_seconds
    )


def _close(got, want, name, source) -> bool:
    rel, floor = _tolerance(name, source)
    if want is None or got is None:
        return got == want or (got == 0 and want is None)
    return abs(got - want) <= max(rel * abs(want), floor)


@pytest.mark.parametrize("board", [d["name"] for d in STARTER_DASHBOARDS])
def test_every_starter_chart_equals_polars(shown, board):
    for data in shown["datas"][board]:
        assert data.hidden is None and data.problem is None, (data.chart.title, data.problem)
        result, name = data.result, data.chart.series
        ref = _reference(shown, data)
        keys = (["bucket"] if result.bucket_seconds else []) + list(result.group_by)
        if not keys:
            assert _close(total(result), ref[name][0], name, result.source), data.chart.title
            continue
        kept = result.frame.filter(
            pl.all_horizontal(pl.col(g).cast(pl.String) != OTHER for g in result.group_by)
        )
        merged = kept.join(ref, on=keys, how="left", suffix="_ref", nulls_equal=True)
        for row in merged.iter_rows(named=True):
            assert _close(row[name], row[f"{name}_ref"], name, result.source), (
                data.chart.title,
                row,
            )
        groups = result.frame.select(result.group_by).unique().height
        assert groups <= data.chart.top + 1  # the top groups and "(other)"
        if name.endswith((".sum", ".count")):  # what is drawn adds up to the whole
            assert result.frame[name].sum() == pytest.approx(ref[name].sum(), rel=1e-9)


def test_a_number_compares_with_the_period_before(shown):
    spend = shown["datas"]["Cost by team"][0]
    assert spend.chart.kind == "number" and spend.previous is not None
    before = FilterSpec(relative=None, start=spend.result.start - (END - spend.result.start))
    before = before.replace(end=spend.result.start)
    ref = _reference(shown, spend, spec=before)["total_cost.sum"][0]
    assert total(spend.previous) == pytest.approx(ref, rel=1e-9)
    assert change(spend) == pytest.approx((total(spend.result) - ref) / ref, rel=1e-9)


def test_the_pages_filters_and_a_charts_own_apply_together(shown):
    chart = chart_from_dict(
        {
            "title": "gpt-4o calls by environment",
            "kind": "bar",
            "series": "request_count.count",
            "bucket": "none",
            "group_by": ["environment"],
            "filters": {"models": ["gpt-4o"]},
        },
        0,
    )
    page = SPEC.replace(providers=("openai",))
    scope = admin_scope(shown["org_id"])
    (data,) = load_dashboard(shown["run"], scope, Dashboard("t", (chart,)), page)
    both = page.replace(models=("gpt-4o",))
    ref = _reference(shown, data, spec=both)
    assert data.query.filters == both
    frame = data.result.frame
    got = dict(zip(frame["environment"], frame["request_count.count"], strict=True))
    want = dict(zip(ref["environment"], ref["request_count.count"], strict=True))
    assert got == want and sum(got.values()) > 0


@pytest.mark.parametrize(
    ("role", "hidden_titles"),
    [
        (
            Role.VIEWER,
            {
                "Spend",
                "Cost per request",
                "Daily spend by team",
                "Spend by model",
                "Spend by team and environment",
            },
        ),
        (Role.BILLING, set()),
    ],
)
def test_a_role_gets_no_number_it_may_not_see(shown, role, hidden_titles):
    scope = admin_scope(shown["org_id"], role=role)
    asked = []

    def run(query, top):
        asked.append(query)
        return shown["run"](query, top)

    board = from_dict(STARTER_DASHBOARDS[0])
    datas = load_dashboard(run, scope, board, SPEC)
    hidden = {d.chart.title for d in datas if d.hidden}
    assert hidden == hidden_titles
    for d in datas:
        if d.hidden:
            assert d.result is None and d.hidden.startswith(HIDDEN)
    assert not any("cost" in s for q in asked for s in q.series) or role is Role.BILLING
    # billing may not filter by prompt text: a text search on the page hides every chart
    if role is Role.BILLING:
        searched = load_dashboard(run, scope, board, SPEC.replace(search="refund"))
        assert all(d.hidden and "search" in d.hidden for d in searched)


def test_charts_are_read_side_by_side_and_each_arrives_once(shown):
    """`each_chart` reads the charts on the chart pool's threads, each with the caller's
    context variables, and hands each chart over once, whatever order they finish in;
    `load_dashboard` puts them back in the dashboard's order."""
    board = from_dict(STARTER_DASHBOARDS[0])
    scope = admin_scope(shown["org_id"])
    marker = contextvars.ContextVar("marker", default=None)
    marker.set("the page's")
    seen: list[tuple[str, str | None]] = []

    def run(query, top):
        seen.append((threading.current_thread().name, marker.get()))
        return shown["run"](query, top)

    prepared: list[str] = []
    got = list(
        each_chart(
            run,
            scope,
            board,
            SPEC,
            on_thread=lambda: prepared.append(threading.current_thread().name),
        )
    )
    assert sorted(i for i, _ in got) == list(range(len(board.charts)))
    assert len(prepared) == len(board.charts)
    assert all(name.startswith("dashboard") for name, _ in seen)
    assert {value for _, value in seen} == {"the page's"}
    in_order = load_dashboard(shown["run"], scope, board, SPEC)
    for index, data in got:
        assert data.chart == board.charts[index] == in_order[index].chart
        assert data.result.frame.equals(in_order[index].result.frame)


def test_a_chart_that_fails_fails_the_page_and_the_rest_are_dropped(shown):
    """The first chart fails while the others wait: the page gets the error, and the charts
    not yet started are never read."""
    board = from_dict(STARTER_DASHBOARDS[0])
    board = replace(board, charts=tuple(board.charts) * 2)
    scope = admin_scope(shown["org_id"])
    release, calls, lock = threading.Event(), [], threading.Lock()

    def run(query, top):
        with lock:
            calls.append(1)
            first = len(calls) == 1
        if first:
            threading.Timer(0.5, release.set).start()
            raise RuntimeError("the database went away")
        release.wait(10)
        return shown["run"](query, top)

    with pytest.raises(RuntimeError, match="went away"):
        load_dashboard(run, scope, board, SPEC)
    release.wait(10)
    assert len(calls) <= 2 * (LOADERS + 1)  # not every one of the charts
