"""Declared dimensions (issue 19) on both stores: a key declared after spans were stored is
back-filled, new spans carry it from ingest, rollups group by its slot and equal polars (rollup
path and raw path), the rollups equal a rebuild; removal clears the slot; the rules."""

from __future__ import annotations

import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.rollups.dimensions import (
    backfill_step,
    declare,
    list_dimensions,
    remove,
)
from tests.helpers import admin_scope, all_spans, assert_rollups_match_rebuild, make_org, write
from tests.metrics.reference import reference_metrics
from tests.metrics.test_engine import check
from tests.metrics.test_keyed_groups import keyed_rows, meta_customer, tag_customer
from tests.traces.conftest import NOW

SERIES = ("request_count", "total_cost.sum", "total_tokens.sum", "error_count", "duration_ms.avg")


def _reference_df(engine):
    import polars as pl

    df = all_spans(engine)
    return df.with_columns(
        pl.Series("tag:customer", [tag_customer(t) for t in df["tags"].to_list()], pl.Utf8),
        pl.Series(
            "metadata:customer", [meta_customer(m) for m in df["metadata"].to_list()], pl.Utf8
        ),
    )


def _run_backfill(engine) -> int:
    steps = 0
    while backfill_step(engine) is not None:
        steps += 1
    return steps


def _matches(engine, org, key, force, bucket="1day", relative="7d"):
    spec = FilterSpec(relative=relative)
    query = MetricQuery(series=SERIES, filters=spec, bucket=bucket, group_by=(key,))
    result = run_metrics(engine, admin_scope(org), query, now=NOW, force=force)
    ref = reference_metrics(
        _reference_df(engine), spec, NOW, org, result.series, (key,), result.bucket_seconds
    )
    check(result, ref, (["bucket"] if result.bucket_seconds else []) + [key])
    return result


def test_declared_key_backfills_and_groups_from_rollups(engine):
    acme, projects = make_org(engine, "acme", projects=("bot", "search"))
    other, other_projects = make_org(engine, "globex")
    rows = keyed_rows(acme, projects, seed=7, traces=100)
    half = len(rows) // 2
    write(engine, rows[:half])  # stored before the declaration: the back-fill's work
    write(engine, keyed_rows(other, other_projects, seed=8, traces=20))
    scope = admin_scope(acme)
    declared = declare(engine, scope, "tag:customer", now=NOW)
    assert declared["slot"] == "dim_1"
    # before the back-fill is done the JSON path answers, and is right
    before = _matches(engine, acme, "tag:customer", None)
    assert before.source == "raw"
    write(engine, rows[half:])  # after: extracted at ingest
    assert list_dimensions(engine, scope)[0]["status"] == "backfilling"
    assert _run_backfill(engine) > 1
    (state,) = list_dimensions(engine, scope)
    assert (state["status"], state["progress"]) == ("ready", 1.0) and state["rows_done"] > 0
    # rollups now group by the slot: the planner picks them and the figures equal polars
    auto = _matches(engine, acme, "tag:customer", None)
    assert auto.source == "rollup" and auto.group_by == ("tag:customer",)
    assert "tag:customer" in auto.frame.columns
    assert None in set(auto.frame["tag:customer"].to_list())  # no value: its own group
    _matches(engine, acme, "tag:customer", "rollup", bucket=None)
    _matches(engine, acme, "tag:customer", "raw")
    # the other org's rows and an undeclared key are untouched
    assert _matches(engine, acme, "metadata:customer", None).source == "raw"
    assert_rollups_match_rebuild(engine)
    # older than the back-fill: the JSON path, still right
    old = _matches(engine, acme, "tag:customer", None, bucket=None, relative="90d")
    assert old.source == "raw"
    # removal clears the slot and frees it
    remove(engine, scope, "tag:customer", now=NOW)
    _run_backfill(engine)
    assert list_dimensions(engine, scope) == []
    assert all_spans(engine)["dim_1"].drop_nulls().len() == 0
    assert_rollups_match_rebuild(engine)
    assert _matches(engine, acme, "tag:customer", None).source == "raw"


def test_declared_user_id_groups_from_rollups(engine):
    """user_id is a field rollups leave out: declared, it is carried like a key, alone and
    beside a carried field, and the figures stay polars' (None users included)."""
    acme, projects = make_org(engine, "acme", projects=("bot",))
    rows = keyed_rows(acme, projects, seed=9, traces=60)
    for r in rows[::7]:
        r["user_id"] = None
    write(engine, rows[: len(rows) // 2])
    scope = admin_scope(acme)
    assert _matches(engine, acme, "user_id", None).source == "raw"
    declare(engine, scope, "user_id", now=NOW)
    write(engine, rows[len(rows) // 2 :])
    _run_backfill(engine)
    auto = _matches(engine, acme, "user_id", None)
    assert auto.source == "rollup" and None in set(auto.frame["user_id"].to_list())
    _matches(engine, acme, "user_id", "rollup", bucket=None)
    spec = FilterSpec(relative="7d")
    query = MetricQuery(series=SERIES, filters=spec, bucket="1hour", group_by=("model", "user_id"))
    both = run_metrics(engine, scope, query, now=NOW)
    ref = reference_metrics(
        _reference_df(engine), spec, NOW, acme, both.series, ("model", "user_id"), 3600
    )
    check(both, ref, ["bucket", "model", "user_id"])
    assert both.source == "rollup"
    assert_rollups_match_rebuild(engine)


def test_declaration_rules(engine):
    acme, _ = make_org(engine, "acme")
    scope = admin_scope(acme)
    with pytest.raises(UserError, match="tag or metadata key.*or user_id"):
        declare(engine, scope, "model", now=NOW)
    with pytest.raises(UserError, match="tag or metadata key"):
        declare(engine, scope, "colour", now=NOW)
    with pytest.raises(UserError, match="1 to 64 letters"):
        declare(engine, scope, "metadata:bad key", now=NOW)
    with pytest.raises(PermissionDenied):
        declare(engine, admin_scope(acme, role=Role.DEVELOPER), "tag:team", now=NOW)
    for n in range(10):
        declare(engine, scope, f"metadata:k{n}", now=NOW)
    with pytest.raises(UserError, match="at most 10"):
        declare(engine, scope, "tag:one-more", now=NOW)
    with pytest.raises(UserError, match="already"):
        declare(engine, scope, "metadata:k3", now=NOW)
    with pytest.raises(UserError, match="not a dimension"):
        remove(engine, scope, "tag:never", now=NOW)
