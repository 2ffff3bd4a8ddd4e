"""Rollups kept up to date batch by batch equal a rebuild from scratch, and the raw rows."""

from __future__ import annotations

import polars as pl
from sqlalchemy import select

from observatory_core.rollups.maintain import rebuild
from observatory_core.storage.schema import ROLLUPS


def _rows(engine, grain: str) -> pl.DataFrame:
    table = ROLLUPS[grain]
    with engine.connect() as conn:
        rows = conn.execute(select(table)).mappings().all()
    keys = [
        "org_id",
        "bucket_start",
        "project_id",
        "provider",
        "model",
        "environment",
        "operation",
        "status",
    ]
    return pl.DataFrame([dict(r) for r in rows], infer_schema_length=None).sort(keys)


def test_incremental_rollups_equal_a_rebuild(metrics_data):
    engine = metrics_data["engine"]
    before = {g: _rows(engine, g) for g in ROLLUPS}
    counts = rebuild(engine)
    for grain, frame in before.items():
        after = _rows(engine, grain)
        assert counts[grain] == after.height == frame.height, grain
        for column in frame.columns:
            a, b = frame[column], after[column]
            if a.dtype.is_float():
                assert ((a - b).abs().fill_null(0) < 1e-6).all(), (grain, column)
            else:
                assert a.to_list() == b.to_list(), (grain, column)


def test_rollup_counts_equal_the_raw_rows(metrics_data):
    df = metrics_data["df"]
    for grain in ROLLUPS:
        frame = _rows(metrics_data["engine"], grain)
        assert frame["span_count"].sum() == df.height, grain
        assert frame["error_count"].sum() == df.filter(pl.col("status") == "error").height
        assert abs(frame["total_cost_sum"].sum() - df["total_cost_usd"].sum()) < 1e-6
        lat = frame.select(pl.col("^lat_.*$")).sum_horizontal().sum()
        assert lat == df.height


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
