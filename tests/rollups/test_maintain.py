"""Rollups kept up to date batch by batch equal a rebuild from scratch, and the raw rows."""

from __future__ import annotations

import polars as pl

from observatory_core.storage.schema import ROLLUPS
from tests.helpers import assert_rollups_match_rebuild, rollup_rows


def test_incremental_rollups_equal_a_rebuild(metrics_data):
    assert_rollups_match_rebuild(metrics_data["engine"])


def test_rollup_counts_equal_the_raw_rows(metrics_data):
    df = metrics_data["df"]
    for grain in ROLLUPS:
        frame = rollup_rows(metrics_data["engine"], grain)
        assert frame["span_count"].sum() == df.height, grain
        assert frame["error_count"].sum() == df.filter(pl.col("status") == "error").height
        assert abs(frame["total_cost_sum"].sum() - df["total_cost_usd"].sum()) < 1e-6
        assert frame["sketch_spans"].sum() == df.height


def test_distinct_users_and_sessions_from_actor_rollups_are_exact(metrics_data):
    from datetime import timedelta

    from observatory_core.rollups.actors import distinct_actors
    from tests.helpers import admin_scope

    d = metrics_data
    end = d["now"] - timedelta(minutes=7, seconds=13)  # ragged edges on both sides
    start = end - timedelta(days=3, hours=5, minutes=41)
    df = d["df"].filter(
        (pl.col("org_id") == d["acme"])
        & (pl.col("start_time") >= start)
        & (pl.col("start_time") < end)
    )
    want = {
        "user": df["user_id"].drop_nulls().n_unique(),
        "session": df["session_id"].drop_nulls().n_unique(),
    }
    scope = admin_scope(d["acme"])
    assert distinct_actors(d["engine"], scope, start, end) == want
    assert distinct_actors(d["engine"], scope, start, end, force="raw") == want
    bot = admin_scope(d["acme"], project_ids=frozenset({d["projects"][0]}))
    mine = df.filter(pl.col("project_id") == d["projects"][0])
    assert (
        distinct_actors(d["engine"], bot, start, end)["session"]
        == mine["session_id"].drop_nulls().n_unique()
    )


def test_spans_that_arrive_set_aside_are_not_folded(engine):
    """A span written with `duplicate_of` already set (an imported export holding twins) is
    left out of the rollups and trace totals as the raw reads leave it out: the fold adds
    counted spans only (it added them: requests 2 from the rollups against 1 raw)."""
    from datetime import UTC, datetime, timedelta

    from observatory_core.storage.schema import trace_totals
    from tests.helpers import all_spans, make_org, span, write

    org, (project,) = make_org(engine, "acme")
    at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    kept = span(org, project, at)
    rows = [kept, span(org, project, at + timedelta(minutes=1))]
    rows.append(
        span(org, project, at, duplicate_of=kept["span_id"], duplicate_trace_id=kept["trace_id"])
    )
    rows.append(span(org, project, at + timedelta(hours=1), duplicate_of="f" * 16))
    write(engine, rows)
    counted = all_spans(engine).filter(pl.col("duplicate_of").is_null())
    assert counted.height == 2
    for grain in ROLLUPS:
        assert rollup_rows(engine, grain)["span_count"].sum() == counted.height, grain
    with engine.connect() as conn:
        traces = {r.trace_id: r.span_count for r in conn.execute(trace_totals.select())}
    assert sum(traces.values()) == counted.height
    assert set(traces) <= set(counted["trace_id"])
    assert_rollups_match_rebuild(engine)
