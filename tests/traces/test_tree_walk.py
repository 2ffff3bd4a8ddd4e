"""Traces by tree total from the top of the sort's index (`tree_ranking._walk_edge`): the same
page as summing every trace of the window, including when the walk is too short and when
traces received spans after the page's pin (their totals recomputed under it)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import func, select

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.schema import spans
from observatory_core.traces import tree_ranking
from observatory_core.traces.query import pinned_conditions
from observatory_core.traces.tree_ranking import read_by_tree
from tests.helpers import all_spans, make_org, span, write

NOW = datetime(2026, 11, 4, 15, tzinfo=UTC)
SPEC = FilterSpec(relative=None, start=NOW - timedelta(hours=24), end=NOW)
SORTS = ("total_cost_usd", "total_tokens", "duration_ms")


def _trace(rng, org, project, trace_id, hours_before):
    root_start = NOW - timedelta(hours=hours_before)
    root = span(
        org,
        project,
        root_start,
        trace_id=trace_id,
        duration_ms=rng.uniform(50, 5000),
        input_tokens=rng.randint(0, 900),
        output_tokens=rng.randint(0, 300),
        input_cost_usd=round(rng.uniform(0, 2), 4),
    )
    children = [
        span(
            org,
            project,
            root_start + timedelta(seconds=rng.uniform(0, 60)),
            trace_id=trace_id,
            parent_span_id=root["span_id"],
            duration_ms=rng.uniform(10, 9000),
            input_tokens=rng.randint(0, 900),
            output_tokens=rng.randint(0, 300),
            input_cost_usd=round(rng.uniform(0, 2), 4),
        )
        for _ in range(rng.randint(0, 3))
    ]
    return [root, *children]


@pytest.fixture
def forest(engine):
    """60 traces over two days (about half of them in the window), then, after the pin, more
    spans for 6 of them: costly, long and token-heavy ones that would top the list unpinned."""
    rng = random.Random(25)
    org, (web,) = make_org(engine, "acme")
    rows = []
    for i in range(60):
        rows += _trace(rng, org, web, f"{i:032x}", rng.uniform(0.5, 47))
    write(engine, rows)
    with engine.connect() as conn:
        max_id = conn.execute(select(func.max(spans.c.id))).scalar_one()
    late = []
    for i in range(0, 60, 10):
        late.append(
            span(
                org,
                web,
                NOW - timedelta(minutes=5),
                trace_id=f"{i:032x}",
                parent_span_id="f" * 16,
                duration_ms=90_000_000.0,
                input_tokens=10**6,
                input_cost_usd=500.0,
            )
        )
    write(engine, late)
    return {"engine": engine, "org": org, "max_id": max_id}


def _expected(engine, org: int, max_id: int, sort: str) -> list[tuple[str, float]]:
    """polars: traces with a root and a span in the window, under the pin, by their totals."""
    df = all_spans(engine).filter((pl.col("org_id") == org) & (pl.col("id") <= max_id))
    hit = df.filter((pl.col("start_time") >= SPEC.start) & (pl.col("start_time") < SPEC.end))
    rooted = df.filter(pl.col("parent_span_id").is_null())
    totals = (
        df.filter(pl.col("trace_id").is_in(hit["trace_id"].unique().to_list()))
        .group_by("trace_id")
        .agg(
            pl.col("total_cost_usd").sum(),
            pl.col("total_tokens").sum(),
            (
                (pl.col("end_time").max() - pl.col("start_time").min()).dt.total_microseconds()
                / 1000.0
            ).alias("duration_ms"),
        )
        .join(rooted.select("trace_id", pl.col("id").alias("root_id")), on="trace_id")
        .sort([sort, "root_id"], descending=True)
    )
    return [(t, v) for t, v in totals.select("trace_id", sort).iter_rows()]


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("per_row", [1, 3, 1000], ids=["short walk", "walk", "past the end"])
@pytest.mark.parametrize("limit", [1, 5, 40])
def test_walked_pages_list_what_polars_lists(forest, monkeypatch, sort, per_row, limit):
    """Whatever the walk's length (too short for the page, enough, longer than the index),
    the page is the first `limit` traces by pinned total, the late spans left out."""
    engine, org, max_id = forest["engine"], forest["org"], forest["max_id"]
    monkeypatch.setattr(tree_ranking, "_TREE_WALK_PER_ROW", per_row)
    scope = Scope(org_id=org, role=Role.ADMIN)
    with engine.connect() as conn:
        rows, _, _ = read_by_tree(
            conn,
            scope,
            pinned_conditions(engine, SPEC, NOW, max_id),
            ("id", "trace_id", sort),
            spec=SPEC,
            sort=sort,
            direction="desc",
            limit=limit,
            position=None,
            as_of=NOW,
            max_id=max_id,
            count=False,
        )
    expected = _expected(engine, org, max_id, sort)[:limit]
    assert [r["trace_id"] for r in rows] == [t for t, _ in expected]
    assert [r[sort] for r in rows] == pytest.approx([v for _, v in expected])
