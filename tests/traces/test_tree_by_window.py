"""Traces by tree total under a time-only filter: read from trace_totals' first/last start.

Built to catch what that shortcut could get wrong: a trace with spans before and after the
window but none inside, a trace straddling the window's start, and a trace whose spans sit in
two projects (listed once, totals over both, or over the visible one for a project-limited user).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import select

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.rollups.maintain import rebuild
from observatory_core.storage.schema import trace_totals
from observatory_core.traces.query import list_spans
from tests.helpers import all_spans, make_org, span, write
from tests.restore import shared

NOW = datetime(2026, 11, 4, 15, tzinfo=UTC)
WINDOW = FilterSpec(relative=None, start=NOW - timedelta(hours=24), end=NOW - timedelta(hours=12))
ALL_STATUSES = ("ok", "error", "unset")  # the same rows, but through the general path


def _trace(org, project, trace_id, *hours_and_costs, other_project=None):
    """A root at the first offset, children at the rest; (hours before NOW, cost) each."""
    (root_h, root_cost), *children = hours_and_costs
    root = span(
        org, project, NOW - timedelta(hours=root_h), trace_id=trace_id, input_cost_usd=root_cost
    )
    rows = [root]
    for i, (h, cost) in enumerate(children):
        rows.append(
            span(
                org,
                other_project if other_project and i == 0 else project,
                NOW - timedelta(hours=h),
                trace_id=trace_id,
                parent_span_id=root["span_id"],
                input_cost_usd=cost,
                status="error" if cost > 40 else "ok",
            )
        )
    return rows


@pytest.fixture(scope="module")
def _loaded() -> dict:
    return {}


@pytest.fixture
def traces(db_url, _loaded):
    """The five traces, written once per database for the module (the tests read them, and
    a rebuild writes the same totals back)."""
    data = shared(_loaded, db_url, _write_traces)
    return {"engine": data.engine, **data.loaded}


def _write_traces(engine) -> dict:
    org, (web, jobs) = make_org(engine, "acme", projects=("web", "jobs"))
    rows = [
        *_trace(org, web, "a" * 32, (20, 1.0), (19, 2.0)),  # inside
        *_trace(org, web, "b" * 32, (18, 1.0), (30, 50.0), other_project=jobs),  # two projects
        *_trace(org, web, "c" * 32, (30, 9.0), (6, 9.0)),  # before and after, none inside
        *_trace(org, web, "d" * 32, (25, 3.0), (20, 4.0)),  # straddles the start
        *_trace(org, web, "e" * 32, (40, 7.0)),  # outside
    ]
    # spans written one batch per trace part, so the shared flag is set as spans arrive
    write(engine, rows[:4])
    write(engine, rows[4:])
    return {"org": org, "web": web, "jobs": jobs}


def _expected(engine, org, spec: FilterSpec, projects=None) -> dict[str, float]:
    """polars: traces with a matching span and a root, with cost summed over visible spans."""
    df = all_spans(engine).filter(pl.col("org_id") == org)
    if projects:
        df = df.filter(pl.col("project_id").is_in(list(projects)))
    hit = df.filter((pl.col("start_time") >= spec.start) & (pl.col("start_time") < spec.end))
    if spec.project_ids:
        hit = hit.filter(pl.col("project_id").is_in(list(spec.project_ids)))
    with_root = df.filter(pl.col("parent_span_id").is_null())["trace_id"].to_list()
    wanted = set(hit["trace_id"]) & set(with_root)
    totals = (
        df.filter(pl.col("trace_id").is_in(list(wanted)))
        .group_by("trace_id")
        .agg(pl.col("total_cost_usd").sum())
    )
    return dict(totals.iter_rows())


def _listed(engine, scope, spec, sort="total_cost_usd") -> dict[str, float]:
    page = list_spans(engine, scope, spec, mode="traces", sort=sort, now=NOW, limit=100)
    return {r["trace_id"]: r["total_cost_usd"] for r in page.rows}


@pytest.mark.parametrize("projects", [None, "web"], ids=["org-wide", "web-only user"])
@pytest.mark.parametrize("filter_project", [None, "web", "jobs"])
@pytest.mark.parametrize("sort", ["total_cost_usd", "start_time"])
@pytest.mark.parametrize("window_end", [WINDOW.end, NOW], ids=["past window", "up to now"])
def test_time_only_filter_lists_what_the_general_path_and_polars_list(
    traces, projects, filter_project, sort, window_end
):
    """By root start, a window up to the newest span takes the walk from the newest root
    (`trace_lists._walks_from_newest`); a past window the general plan: the same rows."""
    engine, org = traces["engine"], traces["org"]
    visible = frozenset({traces[projects]}) if projects else None
    scope = Scope(org_id=org, role=Role.DEVELOPER if projects else Role.ADMIN, project_ids=visible)
    spec = FilterSpec(
        relative=None,
        start=WINDOW.start,
        end=window_end,
        project_ids=(traces[filter_project],) if filter_project else (),
    )
    general = spec.replace(statuses=ALL_STATUSES)
    fast, slow = _listed(engine, scope, spec, sort), _listed(engine, scope, general, sort)
    expected = _expected(engine, org, spec, visible)
    assert fast.keys() == slow.keys() == expected.keys()
    for trace_id, cost in expected.items():
        assert fast[trace_id] == pytest.approx(cost) == slow[trace_id]
    if not projects and not filter_project and window_end == WINDOW.end:
        assert set(fast) == {"a" * 32, "b" * 32, "d" * 32}
        assert fast["b" * 32] == pytest.approx(51.0)  # both projects' spans


def test_first_last_start_and_shared_are_kept_as_spans_arrive(traces):
    engine = traces["engine"]

    def rows():
        with engine.connect() as conn:
            found = conn.execute(
                select(
                    trace_totals.c.trace_id,
                    trace_totals.c.project_id,
                    trace_totals.c.first_start,
                    trace_totals.c.last_start,
                    trace_totals.c.shared,
                ).order_by(trace_totals.c.trace_id, trace_totals.c.project_id)
            ).all()
        return [tuple(r) for r in found]

    kept = rows()
    rebuild(engine)
    assert rows() == kept
    shared = {(t, bool(s)) for t, _, _, _, s in kept}
    assert shared == {
        ("a" * 32, False),
        ("b" * 32, True),
        ("c" * 32, False),
        ("d" * 32, False),
        ("e" * 32, False),
    }
    straddling = [r for r in kept if r[0] == "d" * 32][0]
    assert (straddling[2], straddling[3]) == (NOW - timedelta(hours=25), NOW - timedelta(hours=20))
