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
